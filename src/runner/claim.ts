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
  /** How long it had been due when claimed (server clock); unknown for queues with limits. */
  dueMs?: number;
}

/** Up to `limit` jobs of `queue`; with `windowMs` > 0 none of priority 0 due before that many ms ago. */
export interface ClaimDemand {
  queue: string;
  limit: number;
  windowMs?: number;
}

/**
 * A claim for one queue goes through claim_jobs_one_queue, whose limit is written into the text
 * (one prepared statement per limit, so at most this many per connection); larger claims and
 * claims for several queues use claim_jobs.
 */
const MAX_LITERAL_LIMIT = 100;

/** What one claim brought: jobs in order, and the queues a limit held back (they may hold more). */
export interface ClaimResult {
  jobs: ClaimedJob[];
  /** Queue -> when a start may be allowed again in ms (rate limit), or null: when a running job finishes. */
  heldBack: Map<string, number | null>;
}

/**
 * Claims for `demands`, only jobs of `tasks` (those this worker has handlers for). Queues in
 * `controlled` (limits or a pause, as last read from the database) go through
 * claim_controlled_jobs; the others through the plain claim, which refuses a controlled queue by
 * itself should this worker not know yet that it became one.
 */
export async function claimJobs(
  pool: pg.Pool,
  queries: Queries,
  demands: ClaimDemand[],
  tasks: string[],
  workerId: string,
  controlled: ReadonlySet<string>,
): Promise<ClaimResult> {
  const plain = controlled.size ? demands.filter((d) => !controlled.has(d.queue)) : demands;
  const limited = controlled.size ? demands.filter((d) => controlled.has(d.queue)) : [];
  const one = plain.length === 1 ? plain[0]! : undefined;
  const statement = !plain.length
    ? undefined
    : one && one.limit <= MAX_LITERAL_LIMIT
      ? queries.claim_jobs_one_queue.config({ queue: one.queue, limit: one.limit, windowMs: one.windowMs ?? 0, tasks, workerId })
      : queries.claim_jobs.config({
          queues: plain.map((d) => d.queue),
          limits: plain.map((d) => d.limit),
          windowsMs: plain.map((d) => d.windowMs ?? 0),
          tasks,
          workerId,
        });
  const { rows, controlledRows } = await withClient(pool, async (client) => ({
    rows: statement ? (await client.query<ClaimRow>(statement)).rows : [],
    controlledRows: limited.length
      ? (await queries.claim_controlled_jobs.run(client, { queues: limited.map((d) => d.queue), limits: limited.map((d) => d.limit), tasks, workerId })).rows
      : [],
  }));
  const jobs = rows.map(toClaimedJob);
  const heldBack = new Map<string, number | null>();
  for (const r of controlledRows) {
    if (r.id === null) heldBack.set(r.queue, r.retry_ms);
    else jobs.push(toClaimedJob(r));
  }
  return { jobs, heldBack };
}

function toClaimedJob(r: ClaimRow): ClaimedJob {
  return {
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
    dueMs: r.due_ms,
  };
}
