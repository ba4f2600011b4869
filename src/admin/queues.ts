// Queue settings that hold across every worker (limits, pause), behind `sluice queue ...` and
// the dashboard. The SQL functions check the values too; these check first, so that an API
// caller gets the same clear error without a round trip.
import { loadQueries } from '../db/queries.js';
import type { Queryable } from '../db/statement.js';

export interface QueueSummary {
  name: string;
  /** Running jobs at most, across all workers (null: no limit). */
  concurrency: number | null;
  /** Running jobs per concurrency key at most (null: no limit). */
  keyConcurrency: number | null;
  /** Starts at most per ratePeriodMs (null: no limit). */
  rateLimit: number | null;
  ratePeriodMs: number;
  paused: boolean;
  /** Queued jobs, runnable now or later. */
  queued: number;
  runnable: number;
  running: number;
  oldestRunnableAgeMs: number | null;
}

export interface QueueLimits {
  concurrency?: number | null;
  keyConcurrency?: number | null;
  rateLimit?: number | null;
  /** Length of the rate window; default 1000. */
  ratePeriodMs?: number;
}

export async function listQueues(db: Queryable, schema: string): Promise<QueueSummary[]> {
  const res = await loadQueries(schema).queue_list.run(db, {});
  return res.rows.map((r) => ({
    name: r.name,
    concurrency: r.concurrency,
    keyConcurrency: r.key_concurrency,
    rateLimit: r.rate_limit,
    ratePeriodMs: r.rate_period_ms,
    paused: r.paused,
    queued: r.queued,
    runnable: r.runnable,
    running: r.running,
    oldestRunnableAgeMs: r.oldest_runnable_ms === null ? null : Math.max(0, Math.round(r.oldest_runnable_ms)),
  }));
}

function checkQueue(queue: string): void {
  if (typeof queue !== 'string' || queue.trim() === '' || queue.length > 128) {
    throw new RangeError(`queue must be a non-blank name of at most 128 characters, got ${JSON.stringify(queue)}`);
  }
}

function checkLimit(name: string, v: number | null | undefined, min: number): number | null {
  if (v === null || v === undefined) return null;
  if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`${name} must be an integer >= ${min} (or none), got ${JSON.stringify(v)}`);
  return v;
}

/** Sets every limit of `queue` at once: a limit left out is removed. */
export async function setQueueLimits(db: Queryable, schema: string, queue: string, limits: QueueLimits): Promise<void> {
  checkQueue(queue);
  const ratePeriodMs = limits.ratePeriodMs ?? 1000;
  if (!Number.isFinite(ratePeriodMs) || ratePeriodMs <= 0) throw new RangeError(`the rate period must be a positive duration, got ${ratePeriodMs} ms`);
  await loadQueries(schema).set_queue_limits.run(db, {
    queue,
    concurrency: checkLimit('concurrency', limits.concurrency, 1),
    keyConcurrency: checkLimit('key concurrency', limits.keyConcurrency, 1),
    rateLimit: checkLimit('rate limit', limits.rateLimit, 1),
    ratePeriodMs,
  });
}

/** No worker starts a new job of `queue` until it is resumed; running jobs finish, jobs can still be added. */
export async function pauseQueue(db: Queryable, schema: string, queue: string): Promise<void> {
  checkQueue(queue);
  await loadQueries(schema).pause_queue.run(db, { queue });
}

export async function resumeQueue(db: Queryable, schema: string, queue: string): Promise<void> {
  checkQueue(queue);
  await loadQueries(schema).resume_queue.run(db, { queue });
}
