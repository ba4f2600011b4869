// Coalesced notifications: an insert notifies only while a runner of its queue waits (holds the
// queue's wake lock). None of these jobs may wait for the safety poll, set to 10 minutes here:
// every job below runs because a notification or the wake lock protocol told the worker.
import { expect } from 'chai';
import pg from 'pg';
import { addJob } from '../src/enqueue.js';
import type { Worker } from '../src/worker/worker.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { gate, migrated, startWorker, stopWorkers } from './support/worker.js';

const TEN_MINUTES = 600_000;

describe('coalesced notifications: no job waits for the poll', function () {
  this.timeout(60_000);
  let url: string;
  let pool: pg.Pool;

  beforeEach(async () => {
    url = await createTestDatabase();
    pool = await migrated(url, 40);
  });
  afterEach(async () => {
    await stopWorkers();
    await pool.end();
  });

  const start = (tasks: Parameters<typeof startWorker>[1], concurrency = 4) =>
    startWorker(url, tasks, { worker: { concurrency, pollMs: TEN_MINUTES } });
  const statusOf = async (id: string) => (await pool.query('SELECT status FROM sluice.jobs WHERE id = $1', [id])).rows[0]?.status;
  const completed = async () => (await pool.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE status = 'completed'")).rows[0].n as number;
  /** Backends of listener connections that hold `queue`'s wake lock. */
  const holderPids = async (queue: string) =>
    (
      await pool.query(
        `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
         WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.mode = 'ExclusiveLock'
           AND ((l.classid::bigint << 32) | l.objid::bigint) = sluice.wake_lock_key($1)
           AND a.application_name LIKE 'sluice-listener%'`,
        [queue],
      )
    ).rows.map((r) => r.pid as number);
  const holders = async (queue: string) => (await holderPids(queue)).length;
  const notifications = async (w: Worker) => Number(/^sluice_notifications_total (\d+)/m.exec(await w.metrics.registry.metrics())?.[1] ?? NaN);

  it('an idle worker holds the wake lock; a busy one gives it back, so inserts meanwhile do not notify, and still run', async () => {
    const first = gate();
    const w = await start({ block: () => first.wait, quick: async () => 'ok' }, 1);
    await waitFor('the idle runner to hold the wake lock', async () => (await holders('default')) === 1);
    const blocker = await addJob(pool, { task: 'block' });
    await waitFor('the blocking job to run', async () => (await statusOf(blocker)) === 'running');
    await waitFor('the busy runner to give the lock back', async () => (await holders('default')) === 0);
    const before = await notifications(w);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push(await addJob(pool, { task: 'quick' }));
    first.open();
    await waitFor('the jobs added while it was busy', async () => (await completed()) === 11);
    expect((await notifications(w)) - before, 'commits that notified while the runner was busy').to.equal(0);
    await waitFor('the idle runner to hold the lock again', async () => (await holders('default')) === 1);
  });

  it('32 producers, one job per transaction, all at once: every job runs', async () => {
    await start({ quick: async () => 'ok' }, 4);
    await waitFor('the idle runner to hold the wake lock', async () => (await holders('default')) === 1);
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        for (let i = 0; i < 25; i++) await pool.query("SELECT sluice.add_job('quick')");
      }),
    );
    await waitFor('all 800 jobs', async () => (await completed()) === 800, 30_000);
  });

  for (const isolation of ['READ COMMITTED', 'REPEATABLE READ']) {
    it(`a job whose ${isolation} transaction commits a second after the insert: notified when the runner waited, found after the commit when it was busy`, async () => {
      const first = gate();
      await start({ block: () => first.wait, quick: async () => 'ok' }, 1);
      await waitFor('the idle runner to hold the wake lock', async () => (await holders('default')) === 1);
      const producer = await pool.connect();
      try {
        // the runner waits: the insert notifies at commit
        await producer.query(`BEGIN ISOLATION LEVEL ${isolation}`);
        const waited = (await producer.query("SELECT sluice.add_job('quick') AS id")).rows[0].id as string;
        await new Promise((r) => setTimeout(r, 1000));
        await producer.query('COMMIT');
        await waitFor('the job of the late commit', async () => (await statusOf(waited)) === 'completed');

        // the runner is busy at insert time and idle before the commit: it cannot take the lock
        // until the producer ends, and then claims once more
        const blocker = await addJob(pool, { task: 'block' });
        await waitFor('the blocking job to run', async () => (await statusOf(blocker)) === 'running');
        await waitFor('the busy runner to give the lock back', async () => (await holders('default')) === 0);
        await producer.query(`BEGIN ISOLATION LEVEL ${isolation}`);
        const late = (await producer.query("SELECT sluice.add_job('quick') AS id")).rows[0].id as string;
        first.open();
        await waitFor('the blocker to finish', async () => (await statusOf(blocker)) === 'completed');
        expect(await holders('default'), 'no runner can wait while the producer is open').to.equal(0);
        await producer.query('COMMIT');
        await waitFor('the job committed after the runner went idle', async () => (await statusOf(late)) === 'completed');
      } finally {
        await producer.query('ROLLBACK');
        producer.release();
      }
    });
  }

  it('a job committed long after it was due, past the claim window: found by the look for jobs before the window', async () => {
    const first = gate();
    await startWorker(url, { block: () => first.wait, quick: async () => 'ok' }, { worker: { concurrency: 1, pollMs: TEN_MINUTES, claimWindowMs: 200 } });
    await waitFor('the idle runner to hold the wake lock', async () => (await holders('default')) === 1);
    const blocker = await addJob(pool, { task: 'block' });
    await waitFor('the blocking job to run', async () => (await statusOf(blocker)) === 'running');
    const producer = await pool.connect();
    try {
      await producer.query('BEGIN');
      // due at the transaction's start: outside the window of every claim after the next 200 ms
      const late = (await producer.query("SELECT sluice.add_job('quick') AS id")).rows[0].id as string;
      await waitFor(
        'the job to be due for five windows',
        async () => (await producer.query("SELECT clock_timestamp() - now() > interval '1 second' AS past")).rows[0].past as boolean,
      );
      first.open();
      await waitFor('the blocker to finish', async () => (await statusOf(blocker)) === 'completed');
      await producer.query('COMMIT');
      await waitFor('the late job', async () => (await statusOf(late)) === 'completed');
    } finally {
      await producer.query('ROLLBACK');
      producer.release();
    }
  });

  it('a rolled-back insert does not keep the runner from waiting', async () => {
    await start({ quick: async () => 'ok' }, 2);
    await waitFor('the idle runner to hold the wake lock', async () => (await holders('default')) === 1);
    const producer = await pool.connect();
    try {
      // taken shared by the insert while the runner gave the lock back for a job
      await addJob(pool, { task: 'quick' });
      await producer.query('BEGIN');
      await producer.query("SELECT sluice.add_job('quick')");
      await producer.query('ROLLBACK');
    } finally {
      producer.release();
    }
    await waitFor('the runner to hold the lock again', async () => (await holders('default')) === 1);
    const after = await addJob(pool, { task: 'quick' });
    await waitFor('a job added after the rollback', async () => (await statusOf(after)) === 'completed');
  });

  it('two workers on one queue: when the holder goes busy the other takes the lock, and runs what comes next', async () => {
    const first = gate();
    const tasks = { block: () => first.wait, quick: async () => 'ok' };
    await start(tasks, 1);
    await start(tasks, 1);
    await waitFor('one of them to hold the wake lock', async () => (await holders('default')) === 1);
    try {
      const blocker = await addJob(pool, { task: 'block' });
      await waitFor('the blocking job to run', async () => (await statusOf(blocker)) === 'running');
      await waitFor('the idle worker to hold the lock', async () => (await holders('default')) === 1);
      const next = await addJob(pool, { task: 'quick' });
      await waitFor('the next job, on the idle worker', async () => (await statusOf(next)) === 'completed');
      expect(await statusOf(blocker)).to.equal('running');
    } finally {
      first.open();
    }
  });

  it('the LISTEN connection killed: the lock goes with it, and the worker takes it again on the new one', async () => {
    const w = await start({ quick: async () => 'ok' }, 2);
    await waitFor('the idle runner to hold the wake lock', async () => (await holders('default')) === 1);
    const [old] = await holderPids('default');
    await pool.query('SELECT pg_terminate_backend($1)', [old]);
    await waitFor('a new listener connection to hold it', async () => {
      const pids = await holderPids('default');
      return pids.length === 1 && pids[0] !== old && w.ready;
    }, 30_000);
    const after = await addJob(pool, { task: 'quick' });
    await waitFor('a job added after the reconnect', async () => (await statusOf(after)) === 'completed');
  });
});
