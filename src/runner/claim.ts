// Taking runnable jobs: one statement, one short borrow, for the free slots of one or several
// queues at once.
import type pg from 'pg';
import { withClient } from '../db/pool.js';
import type { ClaimRow, Queries } from '../db/queries.js';

export interface ClaimedJob {
  id: string;
  queue: string;
  task: string;
  payload: Record<string, unknown>;
  priority: number;
  runAt: Date;
  attempt: number;
  maxAttempts: number;
  /** Fencing token of this claim; outcomes are written only under it. */
  token: string;
  jobKey: string | null;
  createdAt: Date;
  /** W3C trace context of whoever added the job (its run span links to it). */
  traceparent?: string | null;
}

/** Up to `limit` jobs of `queue`. */
export interface ClaimDemand {
  queue: string;
  limit: number;
}

/**
 * A claim for one queue goes through claim_jobs_one_queue, whose limit is written into the text
 * (one prepared statement per limit, so at most this many per connection); larger claims and
 * claims for several queues use claim_jobs.
 */
const MAX_LITERAL_LIMIT = 100;

/** Claims for `demands`, only jobs of `tasks` (those this worker has handlers for). */
export async function claimJobs(pool: pg.Pool, queries: Queries, demands: ClaimDemand[], tasks: string[], workerId: string): Promise<ClaimedJob[]> {
  const one = demands.length === 1 ? demands[0]! : undefined;
  const statement =
    one && one.limit <= MAX_LITERAL_LIMIT
      ? queries.claim_jobs_one_queue.config({ queue: one.queue, limit: one.limit, tasks, workerId })
      : queries.claim_jobs.config({ queues: demands.map((d) => d.queue), limits: demands.map((d) => d.limit), tasks, workerId });
  const res = await withClient(pool, (client) => client.query<ClaimRow>(statement));
  return res.rows.map((r) => ({
    id: String(r.id),
    queue: r.queue,
    task: r.task,
    payload: r.payload,
    priority: r.priority,
    runAt: new Date(r.run_at_ms),
    attempt: r.attempts,
    maxAttempts: r.max_attempts,
    token: String(r.lock_token),
    jobKey: r.job_key,
    createdAt: new Date(r.created_at_ms),
    traceparent: r.traceparent,
  }));
}
