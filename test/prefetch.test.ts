// worker.prefetch: jobs claimed ahead of free slots are held under the lease and fencing, start
// only as slots free (mergeMap never buffers), go back at shutdown without spending an attempt,
// are rescued when their worker dies, and are never claimed ahead for a queue with limits.
import { expect } from 'chai';
import pg from 'pg';
import { setQueueLimits } from '../src/admin/queues.js';
import type { JobContext } from '../src/tasks.js';
import { killWorkers, spawnWorker } from './support/chaos.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { faultsEnabled } from './support/faults.js';
import { gate, migrated, startWorker, statusCounts, stopWorkers } from './support/worker.js';

describe('prefetch (jobs claimed ahead of free slots)', function () {
  this.timeout(120_000);
  let url: string;
  let pool: pg.Pool;

  before(async () => {
    url = await createTestDatabase();
    pool = await migrated(url);
  });
  afterEach(async () => {
    await stopWorkers();
    await killWorkers();
    await pool.query('TRUNCATE sluice.jobs, sluice.workers, sluice.queues');
  });
  after(() => pool.end());

  const running = async () => (await pool.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE status = 'running'")).rows[0].n as number;

  it('holds up to prefetch jobs ahead, runs at most concurrency at once, and never buffers in mergeMap', async () => {
    let active = 0;
    let peak = 0;
    let maxBuffered = 0;
    const hold = gate();
    const w = await startWorker(
      url,
      {
        work: async () => {
          peak = Math.max(peak, ++active);
          await hold.wait;
          await new Promise((r) => setImmediate(r));
          active--;
        },
      },
      { worker: { concurrency: 2, prefetch: 10 } },
    );
    await w.addJobs(Array.from({ length: 100 }, () => ({ task: 'work' })));
    await waitFor('2 running and 10 held ahead', () => active === 2 && w.stats().prefetched === 10);
    expect(await running(), 'held ahead count as running in the database').to.equal(12);
    const sample = setInterval(() => (maxBuffered = Math.max(maxBuffered, w.stats().buffered)), 0);
    hold.open();
    await waitFor('every job to complete', async () => (await statusCounts(pool)).completed === 100);
    clearInterval(sample);
    expect(peak).to.equal(2);
    expect(maxBuffered).to.equal(0);
    expect(w.stats().prefetched).to.equal(0);
    const scrape = await w.metrics.registry.getSingleMetricAsString('sluice_jobs_prefetched');
    expect(scrape).to.match(/sluice_jobs_prefetched 0/);
  });

  it('puts the jobs held ahead back to queued at shutdown, without spending their attempt', async () => {
    const hold = gate();
    const started: string[] = [];
    const w = await startWorker(
      url,
      {
        work: async (_p: unknown, ctx: JobContext) => {
          started.push(ctx.job.id);
          await hold.wait;
        },
      },
      { worker: { concurrency: 1, prefetch: 5, shutdownGraceMs: 10_000 } },
    );
    await w.addJobs(Array.from({ length: 10 }, () => ({ task: 'work' })));
    await waitFor('1 running and 5 held ahead', () => started.length === 1 && w.stats().prefetched === 5);
    const stopping = w.stop();
    await waitFor('the held jobs to go back', async () => (await statusCounts(pool)).queued === 9);
    hold.open();
    await stopping;
    const rows = await pool.query("SELECT status, attempts FROM sluice.jobs WHERE id <> $1 ORDER BY id", [started[0]]);
    expect(rows.rows.every((r) => r.status === 'queued' && r.attempts === 0), JSON.stringify(rows.rows)).to.equal(true);
    expect(started, 'no job held ahead started after the stop').to.have.length(1);
  });

  it('drops a held job that is cancelled or taken away before it starts (fencing), and never runs it', async () => {
    const hold = gate();
    const started: string[] = [];
    const w = await startWorker(
      url,
      {
        work: async (_p: unknown, ctx: JobContext) => {
          started.push(ctx.job.id);
          await hold.wait;
        },
      },
      { worker: { concurrency: 1, prefetch: 3, heartbeatMs: 200 } },
    );
    const ids = await w.addJobs(Array.from({ length: 4 }, () => ({ task: 'work' })));
    await waitFor('1 running and 3 held ahead', () => started.length === 1 && w.stats().prefetched === 3);
    const held = ids.filter((id) => id !== started[0]);
    // one cancelled, one re-claimed by someone else (a new fencing token), as a rescue would
    await pool.query('SELECT sluice.cancel_job($1)', [held[0]]);
    await pool.query("UPDATE sluice.jobs SET lock_token = nextval('sluice.lock_tokens'), locked_by = 'someone-else' WHERE id = $1", [held[1]]);
    await waitFor('the worker to drop both', () => w.stats().prefetched === 1, 10_000);
    hold.open();
    await waitFor('the rest to complete', async () => (await statusCounts(pool)).completed === 2, 10_000);
    expect(started).to.not.include(held[0]);
    expect(started).to.not.include(held[1]);
    const taken = await pool.query('SELECT status, locked_by FROM sluice.jobs WHERE id = $1', [held[1]]);
    expect(taken.rows[0]).to.deep.equal({ status: 'running', locked_by: 'someone-else' });
  });

  it('claims nothing ahead for a queue with limits', async () => {
    await setQueueLimits(pool, 'sluice', 'default', { concurrency: 3 });
    const hold = gate();
    let active = 0;
    const w = await startWorker(
      url,
      {
        work: async () => {
          active++;
          await hold.wait;
        },
      },
      { worker: { concurrency: 2, prefetch: 10 } },
    );
    await w.addJobs(Array.from({ length: 20 }, () => ({ task: 'work' })));
    await waitFor('2 running', () => active === 2);
    await new Promise((r) => setTimeout(r, 300));
    expect(w.stats().prefetched).to.equal(0);
    expect(await running()).to.equal(2);
    hold.open();
  });

  it('jobs held ahead by a SIGKILLed worker are rescued and run by another', async function () {
    if (!faultsEnabled()) this.skip();
    await pool.query(`CREATE SCHEMA IF NOT EXISTS chaos;
      CREATE TABLE IF NOT EXISTS chaos.starts (job_id bigint NOT NULL, worker text NOT NULL, attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
      CREATE TABLE IF NOT EXISTS chaos.effects (job_id bigint PRIMARY KEY, worker text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`);
    const env = { SLUICE_CONCURRENCY: '2', SLUICE_PREFETCH: '20', SLUICE_RESCUE_AFTER_MS: '3000', SLUICE_HEARTBEAT_MS: '300', SLUICE_POLL_MS: '1000' };
    const doomed = await spawnWorker(url, env);
    const { addJobs } = await import('../src/enqueue.js');
    await addJobs(pool, Array.from({ length: 40 }, () => ({ task: 'record', payload: { ms: 500 } })));
    const heldAhead = await waitFor('the worker to hold jobs ahead', async () => {
      const r = await pool.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE status = 'running' AND locked_by = $1", [doomed.id]);
      return r.rows[0].n >= 20 ? r.rows[0].n : undefined;
    }, 30_000, 20);
    doomed.child.kill('SIGKILL');
    await doomed.exited;
    await spawnWorker(url, { ...env, SLUICE_PREFETCH: '0', SLUICE_CONCURRENCY: '20' });
    await waitFor('every job to complete', async () => (await statusCounts(pool)).completed === 40, 90_000, 100);
    const effects = await pool.query('SELECT count(*)::int AS n FROM chaos.effects');
    expect(effects.rows[0].n, 'one effect per job').to.equal(40);
    expect(heldAhead).to.be.at.least(20);
  });
});
