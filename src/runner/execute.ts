// Running one claimed job: its handler with a context, a time limit and an AbortSignal, then its
// outcome written. The slot stays taken until the handler has really settled, so a handler that
// ignores its signal cannot push the worker past its concurrency. What happened is told as events.
import type pg from 'pg';
import { transaction, withClient } from '../db/pool.js';
import type { Queries } from '../db/queries.js';
import { isPermanent, JobAbortedError } from '../errors.js';
import type { Events } from '../observe/events.js';
import type { Logger } from '../observe/logger.js';
import { activeTracer, runInSpan, startRunSpan, traceOutcome } from '../observe/tracing.js';
import { isSnooze } from '../snooze.js';
import type { JobContext, JobDb, JobInfo, TaskDefinition } from '../tasks.js';
import { TIMED_OUT, withTimeout } from '../util/time.js';
import { completeInTransaction, type Completer } from './completer.js';
import { describeError, retryDelayMs, type RetryPolicy } from './retry-policy.js';
import type { RunningJob } from './running-job.js';

export interface ExecuteDeps {
  pool: pg.Pool;
  queries: Queries;
  completer: Completer;
  tasks: Map<string, TaskDefinition>;
  defaultTimeoutMs: number;
  retry: RetryPolicy;
  /** After an abort, how long a handler may take to settle before it is reported stuck. */
  stuckAfterMs: number;
  /** ctx.db of every handler (see jobDb). */
  db: JobDb;
  /** The logger handlers' ctx.log derives from. */
  log: Logger;
  events: Events;
}

type Outcome =
  | { kind: 'completed'; resultJson: string | undefined }
  | { kind: 'completed-in-transaction' }
  | { kind: 'failed'; error: string; retry: boolean }
  | { kind: 'snoozed'; delayMs: number }
  /** Released (shutdown), cancelled or lost: nothing to write. */
  | { kind: 'abandoned' };

const ABANDONED: Outcome = { kind: 'abandoned' };
const COMPLETED_NO_RESULT: Outcome = { kind: 'completed', resultJson: undefined };

/** The `ctx.db` of every handler of a worker: the worker's own bounded pool. */
export function jobDb(pool: pg.Pool): JobDb {
  return {
    query: (text, params) => pool.query(text, params as unknown[]),
    withClient: (fn) => withClient(pool, fn),
    transaction: (fn) => transaction(pool, fn),
  };
}

/**
 * The ctx a handler receives. Its parts are made on first use: most handlers touch few of them,
 * and a child logger alone costs more than a no-op job.
 */
class HandlerContext implements JobContext {
  completedInTransaction = false;
  private info: JobInfo | undefined;
  private logger: Logger | undefined;

  constructor(
    private readonly running: RunningJob,
    private readonly deps: ExecuteDeps,
  ) {}

  get job(): JobInfo {
    const j = this.running.job;
    this.info ??= {
      id: j.id,
      task: j.task,
      queue: j.queue,
      attempt: j.attempt,
      maxAttempts: j.maxAttempts,
      priority: j.priority,
      runAt: j.runAt,
      createdAt: j.createdAt,
      jobKey: j.jobKey,
    };
    return this.info;
  }

  get signal(): AbortSignal {
    return this.running.signal;
  }

  get log(): Logger {
    const { job } = this.running;
    this.logger ??= this.deps.log.child({ jobId: job.id, task: job.task, queue: job.queue, attempt: job.attempt });
    return this.logger;
  }

  get db(): JobDb {
    return this.deps.db;
  }

  // a getter, so that `const { completeInTransaction } = ctx` works too
  get completeInTransaction(): JobContext['completeInTransaction'] {
    return (fn) => this.runInTransaction(fn);
  }

  private runInTransaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const { job } = this.running;
    return transaction(this.deps.pool, async (client) => {
      const result = await fn(client);
      if (!(await completeInTransaction(client, this.deps.completer, job, serializeResult(result)))) {
        this.deps.events.emit({ type: 'job.fenced', job, outcome: 'completed-in-transaction' });
        throw new JobAbortedError('lost', `job ${job.id} is no longer held by this worker (cancelled or rescued); its transaction was rolled back`);
      }
      this.completedInTransaction = true;
      return result;
    });
  }
}

/**
 * Runs the handler and starts writing its outcome. Resolves once the handler has settled (its
 * slot may be reused), with `written` resolving once the outcome is in the database.
 */
export async function executeJob(running: RunningJob, deps: ExecuteDeps): Promise<{ written: Promise<void> }> {
  const { job } = running;
  // claims take only jobs of the tasks in this map
  const def = deps.tasks.get(job.task)!;
  const started = performance.now();
  deps.events.emit({ type: 'job.started', job, lagMs: Date.now() - job.runAt.getTime() });

  const ctx = new HandlerContext(running, deps);
  const tracer = activeTracer();
  const span = tracer && startRunSpan(tracer, job);
  let handlerDone: Promise<unknown>;
  try {
    handlerDone = Promise.resolve(span ? runInSpan(span, () => def.handler(job.payload, ctx)) : def.handler(job.payload, ctx));
  } catch (err) {
    handlerDone = Promise.reject(err);
  }
  const timeoutMs = def.timeoutMs ?? deps.defaultTimeoutMs;
  // settled by whichever comes first: the handler, or an abort (timeout, cancel, loss, shutdown)
  const outcome = await new Promise<Outcome>((settle) => {
    const timer = timeoutMs > 0 ? setTimeout(() => running.abort('timeout', `job timed out after ${timeoutMs} ms`), timeoutMs) : undefined;
    running.whenAborted((cause) => {
      clearTimeout(timer);
      settle(cause === 'timeout' ? { kind: 'failed', retry: true, error: `JobTimeoutError: job timed out after ${timeoutMs} ms` } : ABANDONED);
    });
    handlerDone.then(
      (result) => {
        clearTimeout(timer);
        if (ctx.completedInTransaction) return settle({ kind: 'completed-in-transaction' });
        if (isSnooze(result)) return settle({ kind: 'snoozed', delayMs: result.ms });
        if (result === undefined) return settle(COMPLETED_NO_RESULT);
        try {
          settle({ kind: 'completed', resultJson: serializeResult(result) });
        } catch (err) {
          settle({ kind: 'failed', retry: false, error: `the handler's result is not JSON: ${(err as Error).message}` });
        }
      },
      (err) => {
        clearTimeout(timer);
        settle(
          running.abortedBy && running.abortedBy !== 'timeout'
            ? ABANDONED
            : { kind: 'failed', retry: !isPermanent(err), error: describeError(err) },
        );
      },
    );
  });
  // settled: what the listener holds (this call's ctx and closures) need not live while the outcome is written
  running.offAborted();

  const seconds = (performance.now() - started) / 1000;
  const written = span ? traceOutcome(tracer, span, outcome, () => writeOutcome(running, outcome, deps, seconds)) : writeOutcome(running, outcome, deps, seconds);
  if (running.abortedBy) await waitForStuckHandler(handlerDone, running, deps);
  return { written };
}

async function writeOutcome(running: RunningJob, outcome: Outcome, deps: ExecuteDeps, seconds: number): Promise<void> {
  const { job } = running;
  const { events } = deps;
  switch (outcome.kind) {
    case 'abandoned':
      events.emit({ type: 'job.aborted', job, cause: running.abortedBy === 'cancelled' || running.abortedBy === 'lost' ? running.abortedBy : 'shutdown' });
      return;
    case 'completed-in-transaction':
      events.emit({ type: 'job.completed', job, seconds, inTransaction: true });
      return;
    case 'completed': {
      const w = await deps.completer.complete(job, outcome.resultJson);
      if (w.applied) events.emit({ type: 'job.completed', job, seconds, inTransaction: false });
      else if (w.reason === 'fenced') events.emit({ type: 'job.fenced', job, outcome: 'completed' });
      return;
    }
    case 'snoozed': {
      const w = await deps.completer.snooze(job, outcome.delayMs);
      if (w.applied) events.emit({ type: 'job.snoozed', job, seconds, delayMs: outcome.delayMs });
      else if (w.reason === 'fenced') events.emit({ type: 'job.fenced', job, outcome: 'snoozed' });
      return;
    }
    case 'failed': {
      const delay = retryDelayMs(job.attempt, deps.retry);
      const w = await deps.completer.fail(job, outcome.error, outcome.retry, delay);
      if (!w.applied) {
        if (w.reason === 'fenced') events.emit({ type: 'job.fenced', job, outcome: 'failed' });
      } else if (w.status === 'queued') {
        events.emit({ type: 'job.retried', job, seconds, error: outcome.error, retryInMs: delay });
      } else {
        events.emit({ type: 'job.failed', job, seconds, error: outcome.error, permanent: !outcome.retry });
      }
    }
  }
}

async function waitForStuckHandler(handlerDone: Promise<unknown>, running: RunningJob, deps: ExecuteDeps): Promise<void> {
  const settled = handlerDone.then(() => undefined, () => undefined);
  if ((await withTimeout(settled, deps.stuckAfterMs)) === TIMED_OUT) {
    deps.events.emit({ type: 'job.stuck', job: running.job, cause: running.abortedBy!, afterMs: deps.stuckAfterMs });
    await settled;
    deps.events.emit({ type: 'job.unstuck', job: running.job });
  }
}

function serializeResult(result: unknown): string | undefined {
  if (result === undefined) return undefined;
  const text = JSON.stringify(result);
  if (text === undefined) throw new Error(`a ${typeof result} cannot be stored`);
  if (text.includes('\\u0000')) throw new Error('it contains a NUL character, which PostgreSQL jsonb cannot store');
  return text;
}
