// Running one claimed job: its handler with a context, a time limit and an AbortSignal, then its
// outcome written. The slot stays taken until the handler has really settled, so a handler that
// ignores its signal cannot push the worker past its concurrency.
import type pg from 'pg';
import { transaction, withClient } from '../db/pool.js';
import type { Queries } from '../db/queries.js';
import type { Logger } from '../log.js';
import type { JobMetrics, Metrics } from '../metrics.js';
import { type JobContext, type JobDb, type JobInfo, type TaskDefinition } from '../tasks.js';
import { isPermanent, JobAbortedError, type AbortCause } from '../errors.js';

export { JobAbortedError, type AbortCause };
import type { ClaimedJob } from './claim.js';
import { backoffMs } from '../util/backoff.js';
import { TIMED_OUT, withTimeout } from '../util/time.js';
import { completeInTransaction, type Completer } from './complete.js';

/** A job's logger, made on first use: a child logger costs more than a no-op job. */
class JobLog {
  private child: Logger | undefined;
  constructor(private readonly base: Logger, private readonly job: ClaimedJob) {}

  get logger(): Logger {
    this.child ??= this.base.child({ jobId: this.job.id, task: this.job.task, queue: this.job.queue, attempt: this.job.attempt });
    return this.child;
  }

  debug(msg: string, fields: object = {}): void {
    if (this.base.isLevelEnabled('debug')) this.logger.debug(fields, msg);
  }
}

export interface ExecuteDeps {
  pool: pg.Pool;
  queries: Queries;
  completer: Completer;
  tasks: Map<string, TaskDefinition>;
  defaultTimeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** After an abort, how long a handler may take to settle before it is reported stuck. */
  stuckAfterMs: number;
  /** ctx.db of every handler (see jobDb). */
  db: JobDb;
  log: Logger;
  metrics: Metrics;
}

/** A job while this worker runs it; the worker aborts it through `abort`. */
export class RunningJob {
  abortedBy: AbortCause | undefined;
  // made on first use: most handlers never look at their signal, and one costs microseconds
  private controller: AbortController | undefined;
  private abortReason: JobAbortedError | undefined;
  /** The handler has settled; only its outcome may still be on its way to the database. */
  handlerDone = false;
  private onAbort: ((cause: AbortCause) => void) | undefined;

  constructor(readonly job: ClaimedJob) {}

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  abort(cause: AbortCause, message: string): void {
    if (this.abortedBy) return;
    this.abortedBy = cause;
    this.abortReason = new JobAbortedError(cause, message);
    this.controller?.abort(this.abortReason);
    this.onAbort?.(cause);
  }

  whenAborted(fn: (cause: AbortCause) => void): void {
    this.onAbort = fn;
    if (this.abortedBy) fn(this.abortedBy);
  }
}

const MAX_ERROR_CHARS = 8000;

export function describeError(err: unknown): string {
  let text: string;
  if (err instanceof Error) text = err.stack && err.stack.includes(err.message) ? err.stack : `${err.name}: ${err.message}\n${err.stack ?? ''}`;
  else {
    try {
      text = `non-Error thrown: ${JSON.stringify(err)}`;
    } catch {
      text = `non-Error thrown: ${String(err)}`;
    }
  }
  return text.length > MAX_ERROR_CHARS ? `${text.slice(0, MAX_ERROR_CHARS)}… [truncated ${text.length - MAX_ERROR_CHARS} chars]` : text;
}

/** A job's retry backoff: half to all of base * 2^(attempt-1), at most max. */
export function retryDelayMs(attempt: number, baseMs: number, maxMs: number): number {
  return backoffMs(attempt, { baseMs, maxMs, jitter: 'equal' });
}

type Outcome =
  | { kind: 'completed'; resultJson: string | undefined }
  | { kind: 'completed-in-transaction' }
  | { kind: 'failed'; error: string; retry: boolean }
  /** Released (shutdown), cancelled or lost: nothing to write. */
  | { kind: 'abandoned' };

const ABANDONED: Outcome = { kind: 'abandoned' };

/** The `ctx.db` of every handler of a worker: the worker's own bounded pool. */
export function jobDb(pool: pg.Pool): JobDb {
  return {
    query: (text, params) => pool.query(text, params as unknown[]),
    withClient: (fn) => withClient(pool, fn),
    transaction: (fn) => transaction(pool, fn),
  };
}

/** The ctx a handler receives. Its parts are made on first use: most handlers touch few of them. */
class HandlerContext implements JobContext {
  completedInTransaction = false;
  private info: JobInfo | undefined;

  constructor(
    private readonly running: RunningJob,
    private readonly jobLog: JobLog,
    private readonly metrics: JobMetrics,
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
    return this.jobLog.logger;
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
      if (!(await completeInTransaction(client, this.deps.queries, job, serializeResult(result)))) {
        this.metrics.fenced();
        this.jobLog.logger.warn('job is no longer held by this worker (cancelled or rescued meanwhile); its transaction was rolled back');
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
  const log = new JobLog(deps.log, job);
  const metrics = deps.metrics.forJob(job.queue, job.task);
  const def = deps.tasks.get(job.task);
  const started = performance.now();
  metrics.started(Date.now() - job.runAt.getTime());
  log.debug('job started');

  let handlerDone: Promise<unknown> | undefined;
  let outcome: Outcome;
  if (!def) {
    const known = [...deps.tasks.keys()].sort().join(', ') || 'none';
    outcome = { kind: 'failed', retry: false, error: `unknown task "${job.task}": this worker has no handler for it (known tasks: ${known})` };
  } else {
    const ctx = new HandlerContext(running, log, metrics, deps);
    try {
      handlerDone = Promise.resolve(def.handler(job.payload, ctx));
    } catch (err) {
      handlerDone = Promise.reject(err);
    }
    const done = handlerDone;
    const timeoutMs = def.timeoutMs ?? deps.defaultTimeoutMs;
    // settled by whichever comes first: the handler, or an abort (timeout, cancel, loss, shutdown)
    outcome = await new Promise<Outcome>((settle) => {
      const timer = timeoutMs > 0 ? setTimeout(() => running.abort('timeout', `job timed out after ${timeoutMs} ms`), timeoutMs) : undefined;
      running.whenAborted((cause) => {
        clearTimeout(timer);
        settle(cause === 'timeout' ? { kind: 'failed', retry: true, error: `JobTimeoutError: job timed out after ${timeoutMs} ms` } : ABANDONED);
      });
      done.then(
        (result) => {
          clearTimeout(timer);
          if (ctx.completedInTransaction) return settle({ kind: 'completed-in-transaction' });
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
  }

  const written = writeOutcome(running, outcome, deps, log, metrics, (performance.now() - started) / 1000);
  if (running.abortedBy && handlerDone) await waitForStuckHandler(handlerDone, running, deps, log, metrics);
  return { written };
}

async function writeOutcome(
  running: RunningJob,
  outcome: Outcome,
  deps: ExecuteDeps,
  log: JobLog,
  metrics: JobMetrics,
  seconds: number,
): Promise<void> {
  const { job } = running;
  switch (outcome.kind) {
    case 'abandoned':
      if (running.abortedBy === 'cancelled') {
        metrics.cancelled();
        log.logger.info('job cancelled; its handler was aborted');
      } else if (running.abortedBy === 'lost') {
        log.logger.warn('job is no longer held by this worker (rescued or re-claimed elsewhere); its handler was aborted and its outcome discarded');
      } else {
        log.debug('job abandoned', { reason: running.abortedBy });
      }
      return;
    case 'completed-in-transaction':
      metrics.completed(seconds);
      log.debug('job completed in its own transaction');
      return;
    case 'completed': {
      const w = await deps.completer.complete(job, outcome.resultJson);
      if (!w.applied && w.reason === 'shutdown') return;
      if (w.applied) {
        metrics.completed(seconds);
        log.debug('job completed');
      } else {
        metrics.fenced();
        log.logger.warn('job finished but is no longer held by this worker (cancelled or rescued meanwhile); its result was not written');
      }
      return;
    }
    case 'failed': {
      const delay = retryDelayMs(job.attempt, deps.retryBaseMs, deps.retryMaxMs);
      const w = await deps.completer.fail(job, outcome.error, outcome.retry, delay);
      if (!w.applied && w.reason === 'shutdown') return;
      if (!w.applied) {
        metrics.fenced();
        log.logger.warn('job failed but is no longer held by this worker (cancelled or rescued meanwhile); the failure was not written');
      } else if (w.status === 'queued') {
        metrics.retried(seconds);
        log.logger.warn({ error: firstLine(outcome.error), retryInMs: Math.round(delay) }, 'job failed; will retry');
      } else {
        metrics.failed(seconds);
        log.logger.error({ error: firstLine(outcome.error), permanent: !outcome.retry }, 'job failed for good');
      }
    }
  }
}

async function waitForStuckHandler(
  handlerDone: Promise<unknown>,
  running: RunningJob,
  deps: ExecuteDeps,
  log: JobLog,
  metrics: JobMetrics,
): Promise<void> {
  const settled = handlerDone.then(() => undefined, () => undefined);
  if ((await withTimeout(settled, deps.stuckAfterMs)) === TIMED_OUT) {
    metrics.stuck(1);
    log.logger.warn({ reason: running.abortedBy }, `handler ignores its AbortSignal: still running ${deps.stuckAfterMs} ms after the abort; it keeps its slot`);
    await settled;
    metrics.stuck(-1);
    log.logger.info('stuck handler finally settled; its slot is free');
  }
}

function serializeResult(result: unknown): string | undefined {
  if (result === undefined) return undefined;
  const text = JSON.stringify(result);
  if (text === undefined) throw new Error(`a ${typeof result} cannot be stored`);
  if (text.includes('\\u0000')) throw new Error('it contains a NUL character, which PostgreSQL jsonb cannot store');
  return text;
}

function firstLine(text: string): string {
  const i = text.indexOf('\n');
  return i < 0 ? text : text.slice(0, i);
}
