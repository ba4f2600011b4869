// Taking runnable jobs: one statement, one short borrow, up to `limit` jobs at once.
import type pg from 'pg';
import { withClient } from '../db/pool.js';
import type { Queries } from '../db/sql.js';

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
}

export async function claimJobs(
  pool: pg.Pool,
  queries: Queries,
  queues: string[],
  limit: number,
  workerId: string,
): Promise<ClaimedJob[]> {
  const res = await withClient(pool, (client) =>
    client.query({ ...queries.claim_jobs, values: [queues, limit, workerId] }),
  );
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
  }));
}
