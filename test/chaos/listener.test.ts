// Killed connections: the listener's and the pool's backends, while jobs run.
import { expect } from 'chai';
import pg from 'pg';
import type { JobContext } from '../../src/tasks.js';
import { createTestDatabase, waitFor } from '../support/db.js';
import { faultsEnabled } from '../support/faults.js';
import { gate, migrated, startWorker, statusCounts, stopWorkers } from '../support/worker.js';

describe('chaos: killed connections', function () {
  let url: string;
  let pool: pg.Pool;

  before(async function () {
    if (!faultsEnabled()) this.skip();
    url = await createTestDatabase();
    pool = await migrated(url);
  });
  afterEach(async () => {
    await stopWorkers();
    await pool.query('TRUNCATE sluice.jobs, sluice.workers');
  });
  after(() => pool?.end());

  const terminate = (pattern: string) =>
    pool.query('SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name LIKE $1', [pattern]);

  it('runs a job inserted while the listener connection was down', async () => {
    const w = await startWorker(url, { hello: async () => 'hi' }, { worker: { pollMs: 600_000 } });
    const killed = await terminate('sluice-listener%');
    expect(killed.rows[0].n).to.equal(1);
    // inserted in the gap: its notification goes nowhere
    const id = await w.addJob({ task: 'hello' });
    await waitFor('the job to run after the listener came back', async () => {
      const r = await pool.query('SELECT status FROM sluice.jobs WHERE id = $1', [id]);
      return r.rows[0].status === 'completed';
    }, 30_000);
    await waitFor('the listener to be connected again', () => w.stats().listenerConnected);
    // and notifications flow again
    const id2 = await w.addJob({ task: 'hello' });
    await waitFor('a job after reconnect', async () => (await pool.query('SELECT status FROM sluice.jobs WHERE id = $1', [id2])).rows[0].status === 'completed');
  });

  it('survives its pool backends being killed mid-job; every job ends completed', async () => {
    const holding = gate();
    let attemptsSeen = 0;
    const w = await startWorker(url, {
      hold: async (_p: unknown, ctx: JobContext) => {
        attemptsSeen++;
        if (ctx.job.attempt === 1) {
          // hold a pool connection across the kill
          await ctx.db.withClient(async (c) => {
            await holding.wait;
            await c.query('SELECT 1');
          });
        }
        return 'done';
      },
    }, { database: { poolSize: 3 }, worker: { concurrency: 3, retryBaseMs: 10 } });
    await w.addJobs([{ task: 'hold' }, { task: 'hold' }, { task: 'hold' }]);
    await waitFor('three handlers holding connections', () => w.stats().inFlight === 3 && w.stats().poolTotal === 3);
    await waitFor('the three backends to be visible to the server', async () =>
      (await pool.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [`sluice ${w.identity.id}`])).rows[0].n === 3);
    const killed = await terminate(`sluice ${w.identity.id}`);
    expect(killed.rows[0].n).to.equal(3);
    holding.open();
    await waitFor('all jobs to complete after retries', async () => (await statusCounts(pool)).completed === 3, 30_000);
    expect(attemptsSeen).to.be.at.least(4);
    // the worker still works
    const id = await w.addJob({ task: 'hold' });
    await waitFor('a new job to complete', async () => (await pool.query('SELECT status FROM sluice.jobs WHERE id = $1', [id])).rows[0].status === 'completed');
  });
});
