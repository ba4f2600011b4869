import { expect } from 'chai';
import pg from 'pg';
import { PermanentError } from '../src/errors.js';
import type { JobContext } from '../src/tasks.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { gate, migrated, startWorker, statusCounts, stopWorkers } from './support/worker.js';
import { capturingLogger } from './support/faults.js';

describe('worker', function () {
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

  it('runs a job and writes the handler result back to the job', async () => {
    const seen: unknown[] = [];
    const w = await startWorker(url, {
      greet: async (payload: { name: string }, ctx: JobContext) => {
        seen.push({ payload, job: ctx.job });
        return { greeting: `hello ${payload.name}` };
      },
    });
    const id = await w.addJob({ task: 'greet', payload: { name: 'world' }, queue: 'default' });
    await waitFor('the job to complete', async () => (await job(id)).status === 'completed');
    const row = await job(id);
    expect(row.result).to.deep.equal({ greeting: 'hello world' });
    expect(row.attempts).to.equal(1);
    expect(row.finished_at).to.be.instanceOf(Date);
    expect(seen[0]).to.deep.include({ payload: { name: 'world' } });
    expect((seen[0] as { job: JobContext['job'] }).job).to.include({ id, task: 'greet', queue: 'default', attempt: 1, maxAttempts: 25 });
  });

  it('retries a throwing handler with backoff doubling up to retryMaxMs, then fails it with the error recorded', async () => {
    const starts: number[] = [];
    const w = await startWorker(url, {
      flaky: async () => {
        starts.push(Date.now());
        throw new Error(`attempt ${starts.length} broke`);
      },
    }, { worker: { retryBaseMs: 200, retryMaxMs: 500 } });
    const delays: number[] = [];
    w.events.on((e) => {
      if (e.type === 'job.retried') delays.push(e.retryInMs);
    });
    const id = await w.addJob({ task: 'flaky', maxAttempts: 4 });
    await waitFor('the job to fail for good', async () => (await job(id)).status === 'failed', 20_000);
    const row = await job(id);
    expect(row.attempts).to.equal(4);
    expect(row.last_error).to.match(/^Error: attempt 4 broke\n\s+at /);
    expect(row.errors.map((e: { attempt: number }) => e.attempt)).to.deep.equal([1, 2, 3, 4]);
    expect(starts).to.have.length(4);
    // half to all of 200, 400, then 800 capped at 500 ms
    expect(delays).to.have.length(3);
    expect(delays[0]).to.be.within(100, 200);
    expect(delays[1]).to.be.within(200, 400);
    expect(delays[2]).to.be.within(250, 500);
    // and the next attempt did not start before its backoff
    for (let i = 0; i < 3; i++) expect(starts[i + 1]! - starts[i]!).to.be.at.least(Math.floor(delays[i]!) - 5);
  });

  it('keeps the last 10 errors, each at most 8,000 characters, and never logs the payload', async () => {
    const { log, lines } = capturingLogger('debug');
    const w = await startWorker(url, {
      noisy: async (p: { secret: string }, ctx: JobContext) => {
        throw new Error(`attempt ${ctx.job.attempt} ${'x'.repeat(20_000)} ${p.secret.length}`);
      },
    }, { worker: { retryBaseMs: 1, retryMaxMs: 5 } }, log);
    const id = await w.addJob({ task: 'noisy', payload: { secret: 'payload-secret-4711' }, maxAttempts: 12 });
    await waitFor('the job to fail for good', async () => (await job(id)).status === 'failed', 30_000);
    const row = await job(id);
    expect(row.errors.map((e: { attempt: number }) => e.attempt)).to.deep.equal([3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    for (const e of row.errors as { error: string }[]) expect(e.error).to.match(/^Error: attempt \d+ x+… \[truncated \d+ chars\]$/).and.have.length.below(8100);
    expect(row.last_error.length).to.be.below(8100);
    expect(lines.join('')).to.include('job failed; will retry').and.not.include('payload-secret-4711');
  });

  it('does not retry a PermanentError, and keeps the error readable', async () => {
    const w = await startWorker(url, { bad: async () => { throw new PermanentError('payload names no user'); } });
    const id = await w.addJob({ task: 'bad' });
    await waitFor('the job to fail', async () => (await job(id)).status === 'failed');
    expect((await job(id)).attempts).to.equal(1);
    expect((await job(id)).last_error).to.match(/^PermanentError: payload names no user/);
  });

  it('claims only jobs of tasks it has a handler for: others stay queued, attempts unspent', async () => {
    const w = await startWorker(url, { known: async () => 'ok' });
    const unknown = await w.addJob({ task: 'missing_task' });
    const known = await w.addJob({ task: 'known' });
    await waitFor('the known job to complete', async () => (await job(known)).status === 'completed');
    // a poll and a wake-up later, the other is still untouched
    await w.addJob({ task: 'known' });
    await waitFor('the next known job', async () => (await statusCounts(pool, "task = 'known'")).completed === 2);
    expect(await job(unknown)).to.include({ status: 'queued', attempts: 0, locked_by: null });
    const registered = await pool.query('SELECT tasks FROM sluice.workers WHERE id = $1', [w.identity.id]);
    expect(registered.rows[0].tasks).to.deep.equal(['known']);
  });

  it('refuses to start with no task handlers at all', async () => {
    let err: Error | undefined;
    try {
      await startWorker(url, {});
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).to.match(/no task handlers: the tasks option is empty/);
  });

  it('fails a result that is not JSON instead of crashing, and survives odd throws', async () => {
    const w = await startWorker(url, {
      circular: async () => {
        const o: Record<string, unknown> = {};
        o.o = o;
        return o;
      },
      throwsString: async () => {
        throw 'just a string';
      },
    });
    const a = await w.addJob({ task: 'circular' });
    const b = await w.addJob({ task: 'throwsString', maxAttempts: 1 });
    await waitFor('both to fail', async () => (await job(a)).status === 'failed' && (await job(b)).status === 'failed');
    expect((await job(a)).last_error).to.match(/result is not JSON/);
    expect((await job(b)).last_error).to.equal('non-Error thrown: "just a string"');
  });

  it('reaches N concurrent handlers from one statement that inserts 1,000 jobs (one NOTIFY)', async () => {
    let running = 0;
    let peak = 0;
    const w = await startWorker(url, {
      slow: async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 20));
        running--;
      },
    }, { worker: { concurrency: 8 } });
    await pool.query("INSERT INTO sluice.jobs (task) SELECT 'slow' FROM generate_series(1, 1000)");
    await waitFor('1,000 jobs to complete', async () => (await statusCounts(pool)).completed === 1000, 60_000);
    expect(peak).to.equal(8);
    expect(w.stats().buffered).to.equal(0);
  });

  it('claims for all the slots that free together, not one claim per finished job', async () => {
    const w = await startWorker(url, { noop: async () => undefined }, { worker: { concurrency: 50 } });
    // separate statements, so wake-ups arrive while claims are under way
    for (let i = 0; i < 10; i++) await pool.query("INSERT INTO sluice.jobs (task) SELECT 'noop' FROM generate_series(1, 500)");
    await waitFor('5,000 jobs to complete', async () => (await statusCounts(pool)).completed === 5000, 60_000);
    const metrics = await w.metrics.registry.getMetricsAsJSON();
    const total = (name: string) => metrics.find((m) => m.name === name)!.values.reduce((sum, v) => sum + v.value, 0);
    expect(total('sluice_claimed_jobs_total')).to.equal(5000);
    // slots that free in one turn share a claim (test/unit/runner.test.ts checks it without a
    // clock; npm run bench reports jobs per claim): far fewer claims than jobs here too
    expect(total('sluice_claims_total')).to.be.below(5000 / 5);
  });

  it('starts a delayed job at its run_at through a timer, not the safety poll', async () => {
    let startedAt = 0;
    const w = await startWorker(url, { later: async () => { startedAt = Date.now(); } }, { worker: { pollMs: 600_000 } });
    const runAt = new Date(Date.now() + 1500);
    const id = await w.addJob({ task: 'later', runAt });
    await waitFor('the delayed job to complete', async () => (await job(id)).status === 'completed', 20_000);
    // the server and this process share a clock here; the claim requires run_at <= now()
    expect(startedAt).to.be.at.least(runAt.getTime() - 5);
  });

  it('starts a job added while every slot is busy as soon as a slot frees (no lost wake-up)', async () => {
    const g = gate();
    const w = await startWorker(url, {
      block: async () => g.wait,
      quick: async () => 'done',
    }, { worker: { concurrency: 2, pollMs: 600_000 } });
    await w.addJobs([{ task: 'block' }, { task: 'block' }]);
    await waitFor('both slots busy', () => w.stats().inFlight === 2);
    const id = await w.addJob({ task: 'quick' });
    g.open();
    await waitFor('the job added while busy to run', async () => (await job(id)).status === 'completed', 10_000);
  });

  it('keeps mergeMap unbuffered through a storm of 100,000 notifications while all slots are busy', async () => {
    const g = gate();
    const w = await startWorker(url, { block: async () => g.wait }, { worker: { concurrency: 3, pollMs: 600_000 } });
    await w.addJobs([{ task: 'block' }, { task: 'block' }, { task: 'block' }, { task: 'block' }]);
    await waitFor('all slots busy', () => w.stats().inFlight === 3);
    let peakBuffered = 0;
    const sampler = setInterval(() => (peakBuffered = Math.max(peakBuffered, w.stats().buffered)), 1);
    await pool.query(
      "SELECT pg_notify('sluice_jobs', json_build_object('queue', 'default', 'n', g)::text) FROM generate_series(1, 100000) g",
    );
    await waitFor('the storm to be received', async () => {
      const m = await w.metrics.registry.getSingleMetric('sluice_notifications_total')!.get();
      return m.values[0]!.value >= 100_000;
    }, 60_000);
    clearInterval(sampler);
    expect(peakBuffered).to.equal(0);
    expect(w.stats().inFlight).to.equal(3);
    g.open();
    await waitFor('all four jobs to complete', async () => (await statusCounts(pool)).completed === 4);
  });

  it('commits handler writes and completion together, or rolls both back', async () => {
    await pool.query('CREATE TABLE IF NOT EXISTS public.outputs (job_id bigint PRIMARY KEY, value text)');
    const w = await startWorker(url, {
      // handlers often destructure their ctx: every part must work detached from it
      write: async (p: { fail?: boolean }, { job, completeInTransaction }: JobContext) =>
        completeInTransaction(async (tx) => {
          await tx.query('INSERT INTO public.outputs VALUES ($1, $2)', [job.id, 'written']);
          if (p.fail) throw new Error('failed after writing');
          return { wrote: 1 };
        }),
    });
    const ok = await w.addJob({ task: 'write' });
    const bad = await w.addJob({ task: 'write', payload: { fail: true }, maxAttempts: 1 });
    await waitFor('both to finish', async () => (await job(ok)).status === 'completed' && (await job(bad)).status === 'failed');
    expect((await job(ok)).result).to.deep.equal({ wrote: 1 });
    const outputs = await pool.query('SELECT job_id::text AS id FROM public.outputs');
    expect(outputs.rows.map((r) => r.id)).to.deep.equal([ok]);
  });

  it('rolls ctx.db.transaction back when its function throws', async () => {
    await pool.query('CREATE TABLE IF NOT EXISTS public.tx_rows (job_id bigint, step text)');
    const w = await startWorker(url, {
      tx: async (_p: unknown, ctx: JobContext) => {
        await ctx.db.transaction(async (c) => {
          await c.query("INSERT INTO public.tx_rows VALUES ($1, 'kept')", [ctx.job.id]);
        });
        await ctx.db
          .transaction(async (c) => {
            await c.query("INSERT INTO public.tx_rows VALUES ($1, 'rolled back')", [ctx.job.id]);
            throw new Error('after the insert');
          })
          .catch(() => undefined);
        return 'ok';
      },
    });
    const id = await w.addJob({ task: 'tx' });
    await waitFor('the job to complete', async () => (await job(id)).status === 'completed');
    const rows = await pool.query('SELECT step FROM public.tx_rows WHERE job_id = $1', [id]);
    expect(rows.rows.map((r) => r.step)).to.deep.equal(['kept']);
  });

  it('lets the server end a transaction a handler leaves open (database.idleInTransactionTimeoutMs)', async () => {
    let error = '';
    const w = await startWorker(url, {
      idle: async (_p: unknown, ctx: JobContext) =>
        ctx.db.withClient(async (c) => {
          await c.query('BEGIN');
          // idle in the transaction past the limit: the server terminates the session
          await new Promise((r) => setTimeout(r, 1500));
          await c.query('SELECT 1').catch((err: Error) => (error = err.message));
          return 'done';
        }),
    }, { database: { idleInTransactionTimeoutMs: 300 } });
    const id = await w.addJob({ task: 'idle' });
    await waitFor('the job to settle', async () => ['completed', 'failed', 'queued'].includes((await job(id)).status) && error !== '', 20_000);
    expect(error).to.match(/idle-in-transaction timeout|terminat|connection error/i);
    // and the broken connection was not given back to the pool: the worker goes on
    const next = await w.addJob({ task: 'idle' });
    await waitFor('another job to run', async () => (await job(next)).status !== 'queued', 20_000);
  });

  it('gives handlers ctx.db on the same bounded pool', async () => {
    const w = await startWorker(url, {
      count: async (_p: unknown, { db: { query, withClient, transaction } }: JobContext) => {
        const a = await query<{ n: number }>('SELECT 1 + 1 AS n');
        const b = await withClient(async (c) =>
          (await c.query("SELECT current_setting('application_name') AS name, current_setting('tcp_keepalives_idle') AS keepalive")).rows[0]);
        const c = await transaction(async (tx) => (await tx.query('SELECT 3 AS n')).rows[0].n);
        return { a: a.rows[0]!.n, b, c };
      },
    }, { database: { poolSize: 2 }, worker: { concurrency: 6 } });
    const ids = await w.addJobs(Array.from({ length: 30 }, () => ({ task: 'count' })));
    await waitFor('all to complete', async () => (await statusCounts(pool)).completed === 30);
    const result = (await job(ids[0]!)).result;
    expect(result).to.deep.include({ a: 2, c: 3 });
    expect(result.b.name).to.equal(`sluice ${w.identity.id}`);
    // a half-open link is dropped by the server within about 90 s, not the kernel's two hours
    expect(result.b.keepalive).to.equal('60');
  });

  describe('graceful shutdown', () => {
    it('lets running jobs finish within the grace period', async () => {
      const w = await startWorker(url, { work: async () => { await new Promise((r) => setTimeout(r, 300)); return 'finished'; } }, { worker: { shutdownGraceMs: 10_000 } });
      const id = await w.addJob({ task: 'work' });
      await waitFor('the job to start', () => w.stats().inFlight === 1);
      await w.stop();
      expect((await job(id)).status).to.equal('completed');
    });

    it('aborts what outlives the grace period and puts it back without spending an attempt', async () => {
      let abortedWith: unknown;
      const w = await startWorker(url, {
        forever: (_p: unknown, ctx: JobContext) =>
          new Promise((_resolve, reject) => {
            ctx.signal.addEventListener('abort', () => {
              abortedWith = ctx.signal.reason;
              reject(ctx.signal.reason);
            });
          }),
      }, { worker: { shutdownGraceMs: 200 } });
      const id = await w.addJob({ task: 'forever' });
      await waitFor('the job to start', () => w.stats().inFlight === 1);
      await w.stop();
      const row = await job(id);
      expect(row.status).to.equal('queued');
      expect(row.attempts).to.equal(0);
      expect((abortedWith as { reason: string }).reason).to.equal('shutdown');
      expect(await statusCounts(pool)).to.not.have.property('running');
      const workers = await pool.query('SELECT count(*)::int AS n FROM sluice.workers');
      expect(workers.rows[0].n).to.equal(0);
    });
  });
});
