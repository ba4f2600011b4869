import { expect } from 'chai';
import pg from 'pg';
import { applyRoles } from '../src/db/roles.js';
import { addJob, addJobs } from '../src/enqueue.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { migrated, startWorker, stopWorkers } from './support/worker.js';
import { metricSum } from './support/cli.js';
import type { JobContext } from '../src/tasks.js';

describe('roles and bad rows', () => {
  let url: string;
  let pool: pg.Pool;
  const as = (user: string) => {
    const u = new URL(url);
    u.username = user;
    return new pg.Pool({ connectionString: u.toString(), max: 2 });
  };
  let alice: pg.Pool;
  let bob: pg.Pool;

  before(async () => {
    url = await createTestDatabase();
    pool = await migrated(url);
    const roles = await applyRoles(pool, 'sluice');
    expect(roles).to.deep.equal({ producer: 'sluice_producer', worker: 'sluice_worker', producers: [], workers: [] });
    // applying twice is harmless
    await applyRoles(pool, 'sluice');
    const suffix = String(process.pid);
    for (const [name, role] of [[`alice_${suffix}`, 'sluice_producer'], [`bob_${suffix}`, 'sluice_producer'], [`wrk_${suffix}`, 'sluice_worker']]) {
      await pool.query(`DROP ROLE IF EXISTS ${name}`);
      await pool.query(`CREATE ROLE ${name} LOGIN IN ROLE ${role}`);
    }
    alice = as(`alice_${suffix}`);
    bob = as(`bob_${suffix}`);
  });
  after(async () => {
    await stopWorkers();
    await alice.end();
    await bob.end();
    for (const name of ['alice', 'bob', 'wrk']) await pool.query(`DROP ROLE IF EXISTS ${name}_${process.pid}`).catch(() => undefined);
    await pool.end();
  });

  const denied = async (db: pg.Pool, sql: string, params: unknown[] = []) => {
    try {
      await db.query(sql, params);
    } catch (err) {
      return (err as Error).message;
    }
    return 'allowed';
  };

  it('a producer enqueues and reads its own jobs, and can touch nothing else', async () => {
    const mine = await addJob(alice, { task: 'report', payload: { month: 11 } });
    const theirs = await addJob(bob, { task: 'report' });
    const seen = await alice.query('SELECT id::text FROM sluice.my_jobs');
    expect(seen.rows.map((r) => r.id)).to.deep.equal([mine]);
    expect(await denied(alice, 'SELECT * FROM sluice.jobs')).to.match(/permission denied for table jobs/);
    expect(await denied(alice, "UPDATE sluice.jobs SET status = 'cancelled' WHERE id = $1", [theirs])).to.match(/permission denied/);
    expect(await denied(alice, 'DELETE FROM sluice.jobs WHERE id = $1', [theirs])).to.match(/permission denied/);
    expect(await denied(alice, "INSERT INTO sluice.jobs (task) VALUES ('x')")).to.match(/permission denied/);
    expect(await denied(alice, 'SELECT sluice.cancel_job($1)', [theirs])).to.match(/permission denied for function cancel_job/);
    expect(await denied(alice, 'SELECT sluice.retry_job($1)', [theirs])).to.match(/permission denied for function retry_job/);
    expect(await denied(alice, 'SELECT * FROM sluice.workers')).to.match(/permission denied/);
    const r = await pool.query('SELECT status, created_by FROM sluice.jobs WHERE id = $1', [theirs]);
    expect(r.rows[0]).to.deep.equal({ status: 'queued', created_by: `bob_${process.pid}` });
  });

  it("keeps job keys per producer: one cannot block another's keys or learn which exist", async () => {
    const mine = await addJob(alice, { task: 'welcome', jobKey: 'welcome-ada' });
    const theirs = await addJob(bob, { task: 'welcome', jobKey: 'welcome-ada' });
    expect(theirs, "bob's key is his own").to.not.equal(mine);
    expect(await addJob(alice, { task: 'welcome', jobKey: 'welcome-ada' }), 'dedup within one producer').to.equal(mine);
    const sqlDup = (await bob.query("SELECT sluice.add_job('welcome', job_key => 'welcome-ada') AS id")).rows[0].id;
    expect(String(sqlDup)).to.equal(theirs);
    // in one batch too: the first of a key is added (or its holder found), the rest get its id
    const batch = await addJobs(bob, [{ task: 'welcome', jobKey: 'welcome-ada' }, { task: 'x', jobKey: 'fresh' }, { task: 'x', jobKey: 'fresh' }]);
    expect(batch[0]).to.equal(theirs);
    expect(batch[2]).to.equal(batch[1]);
    expect((await bob.query('SELECT id::text FROM sluice.my_jobs ORDER BY id')).rows.map((r) => r.id)).to.not.include(mine);
  });

  it('resolves 10,000 duplicates of one key in a batch to one job', async () => {
    const ids = await addJobs(alice, Array.from({ length: 10_000 }, () => ({ task: 'dup', jobKey: 'same-for-all' })));
    expect(new Set(ids).size).to.equal(1);
    expect((await alice.query("SELECT count(*)::int AS n FROM sluice.my_jobs WHERE job_key = 'same-for-all'")).rows[0].n).to.equal(1);
  });

  it('a worker role runs jobs', async () => {
    const u = new URL(url);
    u.username = `wrk_${process.pid}`;
    const w = await startWorker(u.toString(), { report: async () => ({ ok: true }) });
    await waitFor('the producers\' jobs to complete', async () => {
      const r = await pool.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE status = 'completed'");
      return r.rows[0].n === 2;
    });
    expect(w.stats().inFlight).to.equal(0);
  });

  it('refuses an oversized payload with a clear error, from SQL and by hand', async () => {
    const big = JSON.stringify({ blob: 'x'.repeat(1_100_000) });
    const before = (await pool.query('SELECT count(*)::int AS n FROM sluice.jobs')).rows[0].n;
    expect(await denied(pool, "SELECT sluice.add_job('t', $1::jsonb)", [big])).to.match(/payload is \d+ bytes; at most 1048576 \(1 MiB\) is accepted/);
    expect(await denied(pool, "INSERT INTO sluice.jobs (task, payload) VALUES ('t', $1::jsonb)", [big])).to.match(/jobs_payload_size/);
    expect((await pool.query('SELECT count(*)::int AS n FROM sluice.jobs')).rows[0].n).to.equal(before);
  });
});

describe('roles after a later migration', () => {
  it('keep a function the migration added away from PUBLIC, and the worker role can run it', async () => {
    const { migrate } = await import('../src/db/migrate.js');
    const url = await createTestDatabase();
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    try {
      // an installation made at version 6, with its roles, later upgraded by `sluice migrate`
      await migrate(pool, 'sluice', { toVersion: 6 });
      await applyRoles(pool, 'sluice');
      await migrate(pool, 'sluice');
      const granted = await pool.query("SELECT has_function_privilege('sluice_worker', 'sluice.run_job_now(bigint)', 'EXECUTE') AS ok");
      expect(granted.rows[0].ok).to.equal(true);
      // run_job_now came with migration 7, after the roles were applied: nobody but the roles may run it
      const publicToo = await pool.query(
        "SELECT count(*)::int AS n FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a WHERE p.pronamespace = 'sluice'::regnamespace AND a.grantee = 0",
      );
      expect(publicToo.rows[0].n, 'functions executable by PUBLIC').to.equal(0);
    } finally {
      await pool.end();
    }
  });
});

describe('notifications from anyone', () => {
  let url: string;
  let pool: pg.Pool;
  let outsider: pg.Client;
  const nobody = `notifier_${process.pid}`;

  before(async () => {
    url = await createTestDatabase();
    pool = await migrated(url);
    await applyRoles(pool, 'sluice');
    await pool.query(`DROP ROLE IF EXISTS ${nobody}`);
    await pool.query(`CREATE ROLE ${nobody} LOGIN`);
    const u = new URL(url);
    u.username = nobody;
    outsider = new pg.Client({ connectionString: u.toString() });
    await outsider.connect();
  });
  after(async () => {
    await stopWorkers();
    await outsider.end();
    await pool.query(`DROP ROLE IF EXISTS ${nobody}`).catch(() => undefined);
    await pool.end();
  });

  it('a login with no grants cannot abort a running job by NOTIFY, nor make the worker busy; a real cancel still aborts', async () => {
    let release!: () => void;
    let open = new Promise<void>((r) => (release = r));
    let aborted = 0;
    const w = await startWorker(url, {
      long: async (_p: unknown, ctx: JobContext) => {
        ctx.signal.addEventListener('abort', () => aborted++);
        await Promise.race([open, new Promise((r) => ctx.signal.addEventListener('abort', r))]);
        return { finished: !ctx.signal.aborted };
      },
    }, { worker: { pollMs: 600_000, heartbeatMs: 200 } });
    const id = await w.addJob({ task: 'long' });
    const row = async (jobId: string) => (await pool.query('SELECT status, result FROM sluice.jobs WHERE id = $1', [jobId])).rows[0];
    await waitFor('the job to run', async () => (await row(id)).status === 'running');
    const claims = async () => metricSum(await w.metrics.registry.metrics(), 'sluice_claims_total');
    const claimsBefore = await claims();

    // no grant on anything, and NOTIFY still works: payloads of every shape, many at once
    const payloads: string[] = [];
    for (let i = 0; i < 300; i++) {
      payloads.push(JSON.stringify({ cancel: id, n: i }), JSON.stringify({ cancel: Number(id), n: i }));
      payloads.push(JSON.stringify({ queue: 'default', due: true, n: i }), JSON.stringify({ queue: 'default', runAt: new Date(Date.now() + 1000 + i * 997).toISOString(), due: false }));
      payloads.push(JSON.stringify({ queue: 'default', runAt: 'not a date', n: i }), JSON.stringify({ queue: { a: 1 }, cancel: [id], n: i }));
    }
    payloads.push('not json', 'null', '[]', '42', '"str"', JSON.stringify({ ping: 'x' }), JSON.stringify({ runAt: '-infinity', queue: 'default' }), 'x'.repeat(7900));
    await outsider.query('BEGIN');
    for (const p of payloads) await outsider.query('SELECT pg_notify($1, $2)', ['sluice_jobs', p]);
    await outsider.query('COMMIT');
    await waitFor('the notifications to arrive', async () => metricSum(await w.metrics.registry.metrics(), 'sluice_notifications_total') >= 1200);
    // a few more heartbeats: the job is still held, its handler never aborted
    const hb = async () => (await pool.query('SELECT heartbeat_at FROM sluice.workers WHERE id = $1', [w.identity.id])).rows[0].heartbeat_at.getTime();
    for (let i = 0; i < 3; i++) {
      const last = await hb();
      await waitFor('a heartbeat', async () => (await hb()) > last);
    }
    expect(aborted, 'handler aborted by a notification').to.equal(0);
    expect((await row(id)).status).to.equal('running');
    expect((await claims()) - claimsBefore, 'claims caused by 600 wake-ups').to.be.at.most(20);

    release();
    await waitFor('the job to complete with its result', async () => (await row(id)).status === 'completed');
    expect((await row(id)).result).to.deep.equal({ finished: true });

    // the real thing: cancel_job by a role allowed to call it aborts at once
    open = new Promise<void>((r) => (release = r));
    const id2 = await w.addJob({ task: 'long' });
    await waitFor('the second job to run', async () => (await row(id2)).status === 'running');
    await pool.query('SELECT sluice.cancel_job($1)', [id2]);
    await waitFor('the handler to see the cancellation', () => aborted === 1, 10_000);
    expect((await row(id2)).status).to.equal('cancelled');
    release();
  });
});
