import { expect } from 'chai';
import pg from 'pg';
import type { JobContext } from '../src/tasks.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { gate, migrated, startWorker, statusCounts, stopWorkers } from './support/worker.js';

describe('timeouts and cancellation', function () {
  let url: string;
  let pool: pg.Pool;

  before(async () => {
    url = await createTestDatabase();
    pool = await migrated(url);
  });
  afterEach(async () => {
    await stopWorkers();
    await pool.query('TRUNCATE sluice.jobs, sluice.workers');
  });
  after(() => pool.end());

  const job = async (id: string) => (await pool.query('SELECT * FROM sluice.jobs WHERE id = $1', [id])).rows[0];
  const untilAborted = (ctx: JobContext) =>
    new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));

  it('fails a job at its task timeout through its AbortSignal, and retries it per its attempts', async () => {
    const reasons: string[] = [];
    const w = await startWorker(url, {
      slow: {
        timeoutMs: 150,
        handler: async (_p: unknown, ctx: JobContext) => {
          ctx.signal.addEventListener('abort', () => reasons.push((ctx.signal.reason as { reason: string }).reason));
          return untilAborted(ctx);
        },
      },
    });
    const id = await w.addJob({ task: 'slow', maxAttempts: 2 });
    await waitFor('the job to fail after two timeouts', async () => (await job(id)).status === 'failed', 20_000);
    const row = await job(id);
    expect(row.attempts).to.equal(2);
    expect(row.last_error).to.equal('JobTimeoutError: job timed out after 150 ms');
    expect(reasons).to.deep.equal(['timeout', 'timeout']);
  });

  it('applies worker.jobTimeoutMs to tasks without their own limit', async () => {
    const w = await startWorker(url, { slow: async (_p: unknown, ctx: JobContext) => untilAborted(ctx) }, { worker: { jobTimeoutMs: 100 } });
    const id = await w.addJob({ task: 'slow', maxAttempts: 1 });
    await waitFor('the job to time out', async () => (await job(id)).status === 'failed');
    expect((await job(id)).last_error).to.match(/timed out after 100 ms/);
  });

  it('cancels a running job from SQL: its handler sees the signal and its late result is refused', async () => {
    let aborted: string | undefined;
    const finish = gate();
    const w = await startWorker(url, {
      long: async (_p: unknown, ctx: JobContext) => {
        ctx.signal.addEventListener('abort', () => (aborted = (ctx.signal.reason as { reason: string }).reason));
        await finish.wait;
        return 'finished anyway';
      },
    }, { worker: { heartbeatMs: 60_000, rescueAfterMs: 600_000 } });
    const id = await w.addJob({ task: 'long' });
    await waitFor('the job to run', async () => (await job(id)).status === 'running');
    const r = await pool.query('SELECT sluice.cancel_job($1) AS status', [id]);
    expect(r.rows[0].status).to.equal('cancelled');
    // heartbeats are a minute apart here, so only the notification can deliver this in time
    await waitFor('the handler to see its signal', () => aborted === 'cancelled', 10_000, 10);
    finish.open();
    await waitFor('the slot to free', () => w.stats().inFlight === 0);
    const row = await job(id);
    expect(row.status).to.equal('cancelled');
    expect(row.result).to.equal(null);
  });

  it('cancels a queued job before it runs, and reports finished or unknown jobs as they are', async () => {
    const w = await startWorker(url, { later: async () => 'ran' });
    const id = await w.addJob({ task: 'later', runAt: new Date(Date.now() + 3_600_000) });
    expect((await pool.query('SELECT sluice.cancel_job($1) AS s', [id])).rows[0].s).to.equal('cancelled');
    expect((await pool.query('SELECT sluice.cancel_job($1) AS s', [id])).rows[0].s).to.equal('cancelled');
    expect((await pool.query('SELECT sluice.cancel_job(999999) AS s')).rows[0].s).to.equal(null);
    const done = await w.addJob({ task: 'later' });
    await waitFor('a job to complete', async () => (await job(done)).status === 'completed');
    expect((await pool.query('SELECT sluice.cancel_job($1) AS s', [done])).rows[0].s).to.equal('completed');
  });

  it('notices a cancellation whose notification was missed, by polling', async () => {
    let aborted = false;
    const w = await startWorker(url, {
      long: async (_p: unknown, ctx: JobContext) => {
        await untilAborted(ctx).catch(() => (aborted = true));
      },
    }, { worker: { heartbeatMs: 200 } });
    const id = await w.addJob({ task: 'long' });
    await waitFor('the job to run', async () => (await job(id)).status === 'running');
    // a cancellation written by hand sends no notification
    const cancelledAt = (await pool.query("UPDATE sluice.jobs SET status = 'cancelled', finished_at = now() WHERE id = $1 RETURNING finished_at", [id])).rows[0].finished_at;
    await waitFor('the handler to be aborted', () => aborted, 10_000);
    await waitFor('the slot to free', () => w.stats().inFlight === 0);
    // and nothing the handler did afterwards was written over the cancellation
    const row = await job(id);
    expect(row).to.include({ status: 'cancelled', result: null, attempts: 1 });
    expect(row.finished_at.getTime()).to.equal(cancelledAt.getTime());
  });

  it('reports a handler that ignores its signal as stuck, and keeps its slot taken', async () => {
    const release = gate();
    const started: string[] = [];
    const w = await startWorker(url, {
      stubborn: { timeoutMs: 100, handler: async (_p: unknown, ctx: JobContext) => { started.push(ctx.job.id); await release.wait; } },
      next: async (_p: unknown, ctx: JobContext) => { started.push(ctx.job.id); },
    }, { worker: { concurrency: 1 } });
    const stuck = await w.addJob({ task: 'stubborn', maxAttempts: 1 });
    await waitFor('the timeout to be recorded', async () => (await job(stuck)).status === 'failed');
    const next = await w.addJob({ task: 'next' });
    const stuckGauge = async () => (await w.metrics.registry.getSingleMetric('sluice_handlers_stuck')!.get()).values[0]?.value ?? 0;
    await waitFor('the handler to be reported stuck', async () => (await stuckGauge()) === 1, 20_000, 100);
    expect(started).to.deep.equal([stuck]);
    expect(w.stats().inFlight).to.equal(1);
    expect((await job(next)).status).to.equal('queued');
    release.open();
    await waitFor('the next job to run once the slot frees', async () => (await job(next)).status === 'completed');
    expect(await stuckGauge()).to.equal(0);
    expect(await statusCounts(pool)).to.deep.equal({ completed: 1, failed: 1 });
  });
});
