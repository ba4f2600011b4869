// Queue control inside one worker and from SQL: per-queue slots, limits and pause set in the
// database, concurrency keys, snooze. The same limits across three worker processes (with one
// killed) are in test/chaos/queue-control.test.ts.
import { expect } from 'chai';
import pg from 'pg';
import { listQueues, pauseQueue, resumeQueue, setQueueLimits } from '../src/admin/queues.js';
import { addJob } from '../src/enqueue.js';
import { snooze } from '../src/snooze.js';
import type { JobContext } from '../src/tasks.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { gate, migrated, startWorker, statusCounts, stopWorkers } from './support/worker.js';

describe('queue control', function () {
  let url: string;
  let pool: pg.Pool;

  before(async () => {
    url = await createTestDatabase();
    pool = await migrated(url);
  });
  afterEach(async () => {
    await stopWorkers();
    await pool.query('TRUNCATE sluice.jobs, sluice.workers, sluice.queues, sluice.queue_starts, sluice.cron_ticks');
  });
  after(() => pool.end());

  it('gives each queue of worker.queues its own slots: a busy queue does not starve another', async () => {
    const active: Record<string, number> = { bulk: 0, urgent: 0 };
    const peak: Record<string, number> = { bulk: 0, urgent: 0 };
    const hold = gate();
    const w = await startWorker(
      url,
      {
        work: async (_p: unknown, ctx: JobContext) => {
          const q = ctx.job.queue;
          peak[q] = Math.max(peak[q]!, ++active[q]!);
          await hold.wait;
          active[q]!--;
        },
      },
      { worker: { concurrency: 3, queues: { bulk: {}, urgent: { concurrency: 2 } } as never } },
    );
    await w.addJobs(Array.from({ length: 20 }, () => ({ task: 'work', queue: 'bulk' })));
    await w.addJobs(Array.from({ length: 5 }, () => ({ task: 'work', queue: 'urgent' })));
    await waitFor('both queues to fill their slots', () => active.bulk === 3 && active.urgent === 2);
    hold.open();
    await waitFor('every job to complete', async () => (await statusCounts(pool)).completed === 25);
    expect(peak).to.deep.equal({ bulk: 3, urgent: 2 });
    expect(w.identity.concurrency).to.equal(5);
  });

  it('holds a cluster-wide concurrency limit set in the database, and follows a change at once', async () => {
    let active = 0;
    let peak = 0;
    const release: (() => void)[] = [];
    await setQueueLimits(pool, 'sluice', 'default', { concurrency: 2 });
    const tasks = {
      work: async () => {
        peak = Math.max(peak, ++active);
        await new Promise<void>((r) => release.push(r));
        active--;
      },
    };
    // two workers with 4 slots each: 8 slots, 2 allowed
    const w = await startWorker(url, tasks);
    await startWorker(url, tasks);
    await w.addJobs(Array.from({ length: 10 }, () => ({ task: 'work' })));
    await waitFor('two jobs to run', () => active === 2);
    const running = await pool.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE status = 'running'");
    expect(running.rows[0].n).to.equal(2);
    // raised: the workers hear of it by notification (their poll is a minute away)
    await setQueueLimits(pool, 'sluice', 'default', { concurrency: 5 });
    await waitFor('five jobs to run', () => active === 5, 10_000);
    expect(peak).to.equal(5);
    // removed: all 8 slots
    await setQueueLimits(pool, 'sluice', 'default', {});
    await waitFor('eight jobs to run', () => active === 8, 10_000);
    await waitFor('every job to complete', async () => {
      release.splice(0).forEach((r) => r());
      return (await statusCounts(pool)).completed === 10;
    });
  });

  it('pause stops new starts, running jobs finish, jobs can still be added; resume starts them again', async () => {
    const started: string[] = [];
    const hold = gate();
    const w = await startWorker(url, {
      work: async (_p: unknown, ctx: JobContext) => {
        started.push(ctx.job.id);
        await hold.wait;
      },
    });
    const first = await w.addJob({ task: 'work' });
    await waitFor('the first job to start', () => started.length === 1);
    await pauseQueue(pool, 'sluice', 'default');
    const later = await addJob(pool, { task: 'work' });
    hold.open();
    await waitFor('the running job to finish', async () => (await pool.query('SELECT status FROM sluice.jobs WHERE id = $1', [first])).rows[0].status === 'completed');
    const [q] = await listQueues(pool, 'sluice');
    expect(q).to.include({ name: 'default', paused: true, queued: 1, running: 0 });
    await new Promise((r) => setTimeout(r, 300));
    expect(started).to.deep.equal([first]);
    await resumeQueue(pool, 'sluice', 'default');
    await waitFor('the job added while paused to run', () => started.includes(later), 10_000);
  });

  it('key_concurrency limits running jobs per concurrency key; jobs of other keys and without a key run beside them', async () => {
    await setQueueLimits(pool, 'sluice', 'default', { keyConcurrency: 1 });
    const active = new Map<string, number>();
    const peaks = new Map<string, number>();
    let total = 0;
    let peakTotal = 0;
    const w = await startWorker(
      url,
      {
        work: async (p: { key: string }) => {
          active.set(p.key, (active.get(p.key) ?? 0) + 1);
          peaks.set(p.key, Math.max(peaks.get(p.key) ?? 0, active.get(p.key)!));
          peakTotal = Math.max(peakTotal, ++total);
          await new Promise((r) => setTimeout(r, 30));
          active.set(p.key, active.get(p.key)! - 1);
          total--;
        },
      },
      { worker: { concurrency: 8 } },
    );
    const jobs = [];
    for (let i = 0; i < 12; i++) jobs.push({ task: 'work', payload: { key: `c${i % 3}` }, concurrencyKey: `c${i % 3}` });
    for (let i = 0; i < 4; i++) jobs.push({ task: 'work', payload: { key: `none${i}` } });
    await w.addJobs(jobs);
    await waitFor('every job to complete', async () => (await statusCounts(pool)).completed === 16, 20_000);
    for (const k of ['c0', 'c1', 'c2']) expect(peaks.get(k), k).to.equal(1);
    expect(peakTotal, 'keys in parallel').to.be.above(1);
  });

  it('a rate limit starts at most rate_limit jobs in any window of rate_period', async () => {
    await setQueueLimits(pool, 'sluice', 'default', { rateLimit: 5, ratePeriodMs: 500 });
    const w = await startWorker(url, { work: async () => undefined }, { worker: { concurrency: 10 } });
    await w.addJobs(Array.from({ length: 20 }, () => ({ task: 'work' })));
    await waitFor('every job to complete', async () => (await statusCounts(pool)).completed === 20, 20_000);
    const busiest = await pool.query(`
      SELECT max(n)::int AS n FROM (
        SELECT (SELECT count(*) FROM sluice.jobs b WHERE b.started_at >= a.started_at AND b.started_at < a.started_at + interval '500 ms') AS n
        FROM sluice.jobs a) w`);
    expect(busiest.rows[0].n).to.equal(5);
    const span = await pool.query('SELECT extract(epoch FROM max(started_at) - min(started_at))::float8 * 1000 AS ms FROM sluice.jobs');
    // four windows at least: 20 starts at 5 per 500 ms
    expect(span.rows[0].ms).to.be.at.least(1500);
  });

  it('refuses bad limits with an error naming the argument, in SQL and from the API', async () => {
    const sqlError = async (call: string) => {
      try {
        await pool.query(`SELECT sluice.${call}`);
      } catch (err) {
        return (err as Error).message;
      }
      return 'no error';
    };
    expect(await sqlError("set_queue_limits('q', concurrency => 0)")).to.match(/concurrency must be at least 1.*pause_queue/);
    expect(await sqlError("set_queue_limits('q', key_concurrency => -1)")).to.match(/key_concurrency must be at least 1/);
    expect(await sqlError("set_queue_limits('q', rate_limit => 0)")).to.match(/rate_limit must be at least 1/);
    expect(await sqlError("set_queue_limits('q', rate_limit => 5, rate_period => '0 s')")).to.match(/rate_period must be a positive interval/);
    expect(await sqlError("set_queue_limits(' ', concurrency => 1)")).to.match(/queue must be a non-blank name/);
    expect(await sqlError("pause_queue('')")).to.match(/queue must be a non-blank name/);
    expect(await sqlError("add_job('t', concurrency_key => '')")).to.match(/concurrency_key must be a non-empty string/);
    expect(await sqlError(`add_jobs('[{"task":"t"},{"task":"t","concurrency_key":"${'x'.repeat(300)}"}]')`)).to.match(/concurrency_key is 300 bytes.*job 2 of the batch/);
    const rejection = (p: Promise<unknown>) => p.then(() => 'no error', (err: Error) => err.message);
    expect(await rejection(setQueueLimits(pool, 'sluice', 'q', { concurrency: 1.5 }))).to.match(/concurrency must be an integer >= 1/);
    expect(await rejection(setQueueLimits(pool, 'sluice', 'q', { rateLimit: 5, ratePeriodMs: -1 }))).to.match(/rate period must be a positive duration/);
    expect(await rejection(addJob(pool, { task: 't', concurrencyKey: '' }))).to.match(/concurrencyKey must be a non-empty string/);
    expect((await pool.query('SELECT count(*)::int AS n FROM sluice.jobs')).rows[0].n).to.equal(0);
    expect(await listQueues(pool, 'sluice')).to.deep.equal([]);
  });

  it('snooze(ms): back to queued, due later, no attempt spent; then it runs again', async () => {
    const runs: { attempt: number; at: number }[] = [];
    const w = await startWorker(url, {
      nap: async (_p: unknown, ctx: JobContext) => {
        runs.push({ attempt: ctx.job.attempt, at: Date.now() });
        return runs.length < 3 ? snooze(200) : { woke: true };
      },
    });
    const id = await w.addJob({ task: 'nap', maxAttempts: 1 });
    await waitFor('the job to complete after two snoozes', async () => (await pool.query('SELECT status FROM sluice.jobs WHERE id = $1', [id])).rows[0].status === 'completed', 20_000);
    const row = (await pool.query('SELECT attempts, result, errors FROM sluice.jobs WHERE id = $1', [id])).rows[0];
    // max_attempts 1, run three times: snoozes spend no attempt
    expect(runs.map((r) => r.attempt)).to.deep.equal([1, 1, 1]);
    expect(row).to.deep.include({ attempts: 1, result: { woke: true }, errors: [] });
    expect(runs[1]!.at - runs[0]!.at).to.be.at.least(150);
    expect(() => snooze(-1)).to.throw(RangeError, /snooze\(ms\) takes a number of milliseconds/);
    expect(() => snooze(Number.NaN)).to.throw(RangeError);
  });
});
