import { expect } from 'chai';
import pg from 'pg';
import { migrate } from '../src/db/migrate.js';
import { addJob, addJobs } from '../src/enqueue.js';
import { InvalidJobError } from '../src/errors.js';
import { loadQueries } from '../src/db/queries.js';
import { createTestDatabase, waitFor } from './support/db.js';

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

describe('enqueueing', () => {
  let url: string;
  let pool: pg.Pool;
  let listener: pg.Client;
  const notes: string[] = [];

  before(async () => {
    url = await createTestDatabase();
    pool = new pg.Pool({ connectionString: url, max: 3 });
    await migrate(pool, 'sluice');
    listener = new pg.Client({ connectionString: url });
    await listener.connect();
    listener.on('notification', (n) => notes.push(n.payload ?? ''));
    await listener.query('LISTEN sluice_jobs');
    // the listener stands for a worker whose runners wait for work in these queues: it holds
    // their wake locks, so due jobs notify (with no runner waiting, they would not)
    await listener.query('SELECT pg_advisory_lock(sluice.wake_lock_key(q)) FROM unnest($1::text[]) q', [['default', 'a', 'b', 'delayed', 'bulk']]);
  });
  after(async () => {
    await listener.end();
    await pool.end();
  });

  /** Notifications caused by fn, read up to a marker sent after fn committed. */
  async function drainNotifications(): Promise<string[]> {
    const marker = `marker-${Math.random()}`;
    await pool.query('SELECT pg_notify($1, $2)', ['sluice_jobs', marker]);
    await waitFor('the marker notification', () => notes.includes(marker));
    return notes.splice(0).filter((n) => n !== marker);
  }
  async function notificationsOf(fn: () => Promise<unknown>): Promise<unknown[]> {
    await drainNotifications();
    await fn();
    return (await drainNotifications()).map((n) => JSON.parse(n));
  }

  it('add_job works from any SQL client with only the task named, and notifies its queue', async () => {
    const notes = await notificationsOf(async () => {
      const r = await pool.query("SELECT sluice.add_job('hello') AS id");
      expect(Number(r.rows[0].id)).to.be.greaterThan(0);
      const job = await pool.query('SELECT * FROM sluice.jobs WHERE id = $1', [r.rows[0].id]);
      expect(job.rows[0]).to.include({ task: 'hello', queue: 'default', status: 'queued', priority: 0, attempts: 0, max_attempts: 25 });
      expect(job.rows[0].payload).to.deep.equal({});
    });
    expect(notes).to.have.length(1);
    expect(notes[0]).to.have.property('queue', 'default');
  });

  it('fires one NOTIFY per statement and queue, however many rows it inserts', async () => {
    const notes = await notificationsOf(() =>
      pool.query("INSERT INTO sluice.jobs (task, queue) SELECT 'n', CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 1000) g"),
    );
    expect(notes.map((n) => (n as { queue: string }).queue).sort()).to.deep.equal(['a', 'b']);
  });

  it('says whether jobs are due now, and names the earliest future run_at', async () => {
    const at = new Date(Date.now() + 60_000);
    const notes = await notificationsOf(() => addJob(pool, { task: 'later', queue: 'delayed', runAt: at }));
    expect(notes).to.have.length(1);
    expect(notes[0]).to.include({ queue: 'delayed', due: false });
    expect(new Date((notes[0] as { runAt: string }).runAt).getTime()).to.equal(at.getTime());
    const now = await notificationsOf(() => addJob(pool, { task: 'now', queue: 'delayed' }));
    expect(now).to.deep.equal([{ queue: 'delayed', due: true, runAt: null }]);
  });

  it('notifies a due job only while a runner waits for its queue (holds its wake lock); a job due later always', async () => {
    expect(await notificationsOf(() => addJob(pool, { task: 'n', queue: 'quiet' })), 'nobody waits').to.deep.equal([]);
    const at = new Date(Date.now() + 60_000);
    const later = await notificationsOf(() => addJob(pool, { task: 'n', queue: 'quiet', runAt: at }));
    expect(later).to.have.length(1);
    expect(later[0]).to.include({ queue: 'quiet', due: false });
    expect(await notificationsOf(() => addJobs(pool, [{ task: 'n', queue: 'quiet' }, { task: 'n', queue: 'a' }])), 'one queue of the two waits').to.deep.equal([
      { queue: 'a', due: true, runAt: null },
    ]);
    const q = loadQueries('sluice');
    expect((await q.wake_lock_take.run(listener, { queue: 'quiet' })).rows[0]!.state).to.equal('held');
    try {
      expect(await notificationsOf(() => addJob(pool, { task: 'n', queue: 'quiet' }))).to.deep.equal([{ queue: 'quiet', due: true, runAt: null }]);
    } finally {
      await q.wake_lock_release.run(listener, { queue: 'quiet' });
    }
  });

  describe('the wake lock keeps a runner from waiting past an insert that did not notify', () => {
    const q = loadQueries('sluice');
    let producer: pg.PoolClient;
    let other: pg.PoolClient;
    const take = async (db: pg.ClientBase, queue: string) => (await q.wake_lock_take.run(db, { queue })).rows[0]!.state;
    beforeEach(async () => {
      producer = await pool.connect();
      other = await pool.connect();
    });
    afterEach(async () => {
      await producer.query('ROLLBACK');
      await other.query('SELECT pg_advisory_unlock_all()');
      producer.release();
      other.release();
    });

    for (const isolation of ['READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE']) {
      it(`until the producer's ${isolation} transaction commits, then it can wait and sees the job`, async () => {
        await producer.query(`BEGIN ISOLATION LEVEL ${isolation}`);
        const id = (await producer.query("SELECT sluice.add_job('gated', queue => 'gate') AS id")).rows[0].id;
        expect(await take(other, 'gate'), 'the producer holds it shared').to.equal('producers');
        await producer.query('COMMIT');
        expect(await take(other, 'gate')).to.equal('held');
        const seen = await other.query("SELECT id FROM sluice.jobs WHERE queue = 'gate' AND status = 'queued'");
        expect(seen.rows.map((r) => String(r.id))).to.include(String(id));
        await other.query("DELETE FROM sluice.jobs WHERE queue = 'gate'");
      });
    }

    it('until it rolls back; and an insert while a runner waits notifies at commit, in any isolation', async () => {
      await producer.query('BEGIN');
      await producer.query("SELECT sluice.add_job('gated', queue => 'gate')");
      expect(await take(other, 'gate')).to.equal('producers');
      await producer.query('ROLLBACK');
      expect(await take(other, 'gate')).to.equal('held');
      const notes = await notificationsOf(async () => {
        await producer.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
        await producer.query("SELECT sluice.add_job('gated', queue => 'gate')");
        await producer.query('COMMIT');
      });
      expect(notes).to.deep.equal([{ queue: 'gate', due: true, runAt: null }]);
      expect(await take(listener, 'gate'), 'held by another worker').to.equal('worker');
      await other.query("DELETE FROM sluice.jobs WHERE queue = 'gate'");
    });
  });

  it('notifies when jobs go back to queued, and never for claiming or completing', async () => {
    const q = loadQueries('sluice');
    const [a, b, c, d] = await addJobs(pool, ['a', 'b', 'c', 'd'].map((task) => ({ task, queue: 'cycle' })));
    const claim = async () =>
      (await q.claim_jobs.run(pool, { queues: ['cycle'], limits: [10], windowsMs: [0], tasks: ['a', 'b', 'c', 'd'], workerId: 'w1' })).rows.map((r) => ({ id: String(r.id), token: String(r.lock_token) }));
    let claimed: { id: string; token: string }[] = [];
    expect(await notificationsOf(async () => (claimed = await claim()))).to.deep.equal([]);
    const token = (id: string) => claimed.find((j) => j.id === id)!.token;
    const done = await notificationsOf(() =>
      q.complete_jobs.run(pool, { completions: JSON.stringify([{ id: a, token: token(a!), result: null }]) }),
    );
    expect(done).to.deep.equal([]);
    const retried = await notificationsOf(() =>
      q.fail_jobs.run(pool, { failures: JSON.stringify([{ id: b, token: token(b!), error: 'boom', retry: true, delay_ms: 60_000 }]) }),
    );
    expect(retried).to.have.length(1);
    expect(retried[0]).to.include({ queue: 'cycle', due: false });
    const released = await notificationsOf(() => q.release_jobs.run(pool, { ids: [c!, d!], tokens: [token(c!), token(d!)] }));
    expect(released).to.deep.equal([{ queue: 'cycle', due: true, runAt: null }]);
    const again = await notificationsOf(() => pool.query('SELECT sluice.retry_job($1)', [a]));
    expect(again).to.deep.equal([{ queue: 'cycle', due: true, runAt: null }]);
  });

  it('keeps one unfinished job per job_key, and allows a new one once it finished', async () => {
    const a = await addJob(pool, { task: 'k', jobKey: 'user-1' });
    const b = await addJob(pool, { task: 'k', jobKey: 'user-1', payload: { other: true } });
    expect(b).to.equal(a);
    const sqlId = (await pool.query("SELECT sluice.add_job('k', job_key => 'user-1') AS id")).rows[0].id;
    expect(String(sqlId)).to.equal(a);
    await pool.query("UPDATE sluice.jobs SET status = 'completed', finished_at = now() WHERE id = $1", [a]);
    const c = await addJob(pool, { task: 'k', jobKey: 'user-1' });
    expect(c).to.not.equal(a);
    const [d, e, f] = await addJobs(pool, [
      { task: 'k', jobKey: 'user-1' },
      { task: 'k', jobKey: 'user-2' },
      { task: 'k', jobKey: 'user-2' },
    ]);
    expect(d).to.equal(c);
    expect(f).to.equal(e);
    const n = await pool.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE job_key = 'user-2'");
    expect(n.rows[0].n).to.equal(1);
  });

  it('adds 10,000 jobs in one call, ids in input order, with one notification', async () => {
    const jobs = Array.from({ length: 10_000 }, (_, i) => ({ task: 'bulk', queue: 'bulk', payload: { i } }));
    let ids: string[] = [];
    const notes = await notificationsOf(async () => {
      ids = await addJobs(pool, jobs);
    });
    expect(ids).to.have.length(10_000);
    expect(notes, JSON.stringify(notes)).to.have.length(1);
    const rows = await pool.query("SELECT id, payload FROM sluice.jobs WHERE queue = 'bulk' ORDER BY id");
    expect(rows.rows).to.have.length(10_000);
    const byId = new Map(rows.rows.map((r) => [String(r.id), r.payload.i]));
    ids.forEach((id, i) => expect(byId.get(id)).to.equal(i));
  });

  it('accepts every add_job argument from SQL, by name', async () => {
    const r = await pool.query(
      "SELECT sluice.add_job('t', '{\"a\":1}', queue => 'q2', run_at => now() + interval '1 hour', priority => 5, max_attempts => 3, job_key => 'every-arg') AS id",
    );
    const job = (await pool.query('SELECT * FROM sluice.jobs WHERE id = $1', [r.rows[0].id])).rows[0];
    expect(job).to.include({ task: 't', queue: 'q2', priority: 5, max_attempts: 3, job_key: 'every-arg' });
    expect(job.payload).to.deep.equal({ a: 1 });
    expect(job.run_at.getTime()).to.be.greaterThan(Date.now() + 50 * 60_000);
  });

  describe('bad input gets a clear error and adds nothing', () => {
    let before: number;
    const count = async () => Number((await pool.query('SELECT count(*) AS n FROM sluice.jobs')).rows[0].n);
    beforeEach(async () => {
      before = await count();
    });
    afterEach(async () => {
      expect(await count()).to.equal(before);
    });

    const sqlCases: [string, string, RegExp][] = [
      ['empty task', "SELECT sluice.add_job('')", /task must be a non-empty name/],
      ['NULL task', 'SELECT sluice.add_job(NULL)', /task must be a non-empty name/],
      ['max_attempts below 1', "SELECT sluice.add_job('t', max_attempts => 0)", /max_attempts must be at least 1, got 0/],
      ['negative priority', "SELECT sluice.add_job('t', priority => -1)", /priority must be 0 or more.*got -1/],
      ['payload not an object', "SELECT sluice.add_job('t', '[1,2]')", /payload must be a JSON object, got array/],
      ['payload not JSON', "SELECT sluice.add_job('t', '{nope')", /invalid input syntax for type json/],
      ['bulk: not an array', "SELECT sluice.add_jobs('{}')", /add_jobs expects a JSON array of jobs, got object/],
      ['bulk: a bad job names its place', `SELECT sluice.add_jobs('[{"task":"a"},{"task":""}]')`, /task must be a non-empty name \(job 2 of the batch\)/],
      ['bulk: element not an object', `SELECT sluice.add_jobs('[{"task":"a"}, 3]')`, /job 2 of the batch is not a JSON object/],
      ['job_key empty', "SELECT sluice.add_job('t', job_key => '')", /job_key must be a non-empty string/],
      ['job_key too long for the index', "SELECT sluice.add_job('t', job_key => (SELECT string_agg(md5(x::text), '') FROM generate_series(1, 100) AS x))", /job_key is 3200 bytes; at most 1024 are accepted/],
      ['job_key huge', "SELECT sluice.add_job('t', job_key => repeat('k', 200000))", /job_key is 200000 bytes; at most 1024/],
      ['run_at -infinity (jumping every queue)', "SELECT sluice.add_job('t', run_at => '-infinity')", /run_at must be a finite time, got -infinity/],
      ['run_at infinity', "SELECT sluice.add_job('t', run_at => 'infinity')", /run_at must be a finite time/],
      ['blank queue', "SELECT sluice.add_job('t', queue => '   ')", /queue must be a non-blank name/],
      ['bulk: more than 10000 jobs', `SELECT sluice.add_jobs((SELECT jsonb_agg(jsonb_build_object('task', 't')) FROM generate_series(1, 10001)))`, /add_jobs takes at most 10000 jobs per call, got 10001: split the batch/],
      ['bulk: a bad key names its place', `SELECT sluice.add_jobs('[{"task":"a"},{"task":"b","job_key":""}]')`, /job_key must be a non-empty string.*\(job 2 of the batch\)/],
      ['insert bypassing add_job: -infinity run_at', "INSERT INTO sluice.jobs (task, run_at) VALUES ('t', '-infinity')", /jobs_run_at_finite/],
      ['insert bypassing add_job: blank queue', "INSERT INTO sluice.jobs (task, queue) VALUES ('t', ' ')", /jobs_queue_not_blank/],
      ['insert bypassing add_job: NULL task', 'INSERT INTO sluice.jobs (task) VALUES (NULL)', /null value in column "task"/],
      ['insert bypassing add_job: payload not an object', `INSERT INTO sluice.jobs (task, payload) VALUES ('t', '"s"')`, /jobs_payload_is_object/],
      ['insert bypassing add_job: negative priority', "INSERT INTO sluice.jobs (task, priority) VALUES ('t', -3)", /jobs_priority_valid/],
    ];
    for (const [name, sql, message] of sqlCases) {
      it(`SQL: ${name}`, async () => {
        const err = await rejection(pool.query(sql));
        expect(err.message).to.match(message);
      });
    }

    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const apiCases: [string, () => Promise<unknown>, RegExp][] = [
      ['empty task', () => addJob(pool, { task: ' ' }), /task must be a non-empty name/],
      ['max_attempts below 1', () => addJob(pool, { task: 't', maxAttempts: 0 }), /maxAttempts must be an integer of at least 1, got 0/],
      ['payload an array', () => addJob(pool, { task: 't', payload: [1] as never }), /payload must be a JSON object, got an array/],
      ['payload circular', () => addJob(pool, { task: 't', payload: circular }), /payload.self refers back to itself/],
      ['payload with NaN', () => addJob(pool, { task: 't', payload: { n: NaN } }), /payload.n is NaN/],
      ['payload with a bigint', () => addJob(pool, { task: 't', payload: { n: 1n } }), /payload.n is a bigint/],
      ['payload with a function', () => addJob(pool, { task: 't', payload: { f: () => 1 } }), /payload.f is a function/],
      ['bad runAt', () => addJob(pool, { task: 't', runAt: 'tomorrow-ish' }), /runAt is not a valid date/],
      ['empty job key', () => addJob(pool, { task: 't', jobKey: '' }), /jobKey must be a non-empty string/],
      ['job key over 1024 bytes', () => addJob(pool, { task: 't', jobKey: 'é'.repeat(600) }), /jobKey is 1200 bytes; at most 1024 are accepted/],
      ['blank queue', () => addJob(pool, { task: 't', queue: '  ' }), /queue must be a non-blank name/],
      ['bulk: more than 10000', () => addJobs(pool, Array.from({ length: 10_001 }, () => ({ task: 't' }))), /addJobs takes at most 10000 jobs per call, got 10001/],
      ['bulk: the bad job is named', () => addJobs(pool, [{ task: 'a' }, { task: 'b', priority: -1 }]), /priority must be .*\(job 2 of the batch\)/],
    ];
    for (const [name, call, message] of apiCases) {
      it(`API: ${name}`, async () => {
        const err = await rejection(call());
        expect(err).to.be.instanceOf(InvalidJobError);
        expect(err.message).to.match(message);
      });
    }
  });
});
