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
  // rows as arrays: pg builds an object per row key by key, which cost more than reading the columns
  const { plainRows, controlledRows } = await withClient(pool, async (client) => ({
    plainRows: statement ? await client.query<unknown[]>({ ...statement, rowMode: 'array' }) : undefined,
    controlledRows: limited.length
      ? await client.query<unknown[]>({
          ...queries.claim_controlled_jobs.config({ queues: limited.map((d) => d.queue), limits: limited.map((d) => d.limit), tasks, workerId }),
          rowMode: 'array',
        })
      : undefined,
  }));
  const jobs: ClaimedJob[] = [];
  if (plainRows?.rows.length) {
    const at = columns(plainRows.fields);
    for (const r of plainRows.rows) jobs.push(toClaimedJob(r, at));
  }
  const heldBack = new Map<string, number | null>();
  if (controlledRows?.rows.length) {
    const at = columns(controlledRows.fields);
    for (const r of controlledRows.rows) {
      if (r[at.id] === null) heldBack.set(r[at.queue] as string, r[at.retry_ms] as number | null);
      else jobs.push(toClaimedJob(r, at));
    }
  }
  return { jobs, heldBack };
}

type Column = keyof ClaimRow | 'retry_ms';

/** Where each column of a claim's rows is (claim_controlled_jobs has them in another order). */
function columns(fields: pg.FieldDef[]): Record<Column, number> {
  const at: Record<string, number> = {};
  fields.forEach((f, i) => (at[f.name] = i));
  return at as Record<Column, number>;
}

function toClaimedJob(r: unknown[], at: Record<Column, number>): ClaimedJob {
  return {
    id: String(r[at.id]),
    queue: r[at.queue] as string,
    task: r[at.task] as string,
    payload: r[at.payload] as Record<string, unknown>,
    priority: r[at.priority] as number,
    runAt: new Date(r[at.run_at_ms] as number),
    attempt: r[at.attempts] as number,
    maxAttempts: r[at.max_attempts] as number,
    token: String(r[at.lock_token]),
    jobKey: r[at.job_key] as string | null,
    createdAt: new Date(r[at.created_at_ms] as number),
    traceparent: r[at.traceparent] as string | null,
    dueMs: at.due_ms === undefined ? undefined : (r[at.due_ms] as number),
  };
}
