// Operator functions behind `sluice jobs`, `show`, `retry` and `cancel` (and the same from code).
// The SQL lives in sql/admin/; these functions only check arguments, pass parameters and shape rows.
import { loadQueries, type JobRow } from '../db/queries.js';
import type { Queryable } from '../db/statement.js';
import { JobNotFoundError, JobStateError } from '../errors.js';

export const JOB_STATUSES = ['queued', 'running', 'completed', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export interface JobSummary {
  id: string;
  queue: string;
  task: string;
  status: JobStatus;
  priority: number;
  runAt: string;
  attempts: number;
  maxAttempts: number;
  jobKey: string | null;
  lockedBy: string | null;
  /** First line of the last error. */
  lastError: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface JobError {
  attempt: number;
  at: string;
  error: string;
}

export interface JobDetail extends Omit<JobSummary, 'lastError'> {
  payload: Record<string, unknown>;
  lastError: string | null;
  errors: JobError[];
  result: unknown;
  lockedAt: string | null;
}

export interface JobFilter {
  status?: JobStatus;
  queue?: string;
  task?: string;
  /** Newest first; 20 when omitted. */
  limit?: number;
}

function iso(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  return v instanceof Date ? v.toISOString() : String(v);
}

/** Accepts a job id as the CLI or an API caller gives it; throws on anything but a positive integer. */
export function parseJobId(id: string | number): string {
  const s = String(id).trim();
  if (!/^[1-9][0-9]{0,18}$/.test(s) || BigInt(s) > 9223372036854775807n) {
    throw new RangeError(`job id must be a positive integer, got ${JSON.stringify(String(id))}`);
  }
  return s;
}

export async function listJobs(db: Queryable, schema: string, filter: JobFilter = {}): Promise<JobSummary[]> {
  if (filter.status !== undefined && !JOB_STATUSES.includes(filter.status)) {
    throw new RangeError(`status must be one of ${JOB_STATUSES.join(', ')}, got ${JSON.stringify(filter.status)}`);
  }
  const limit = filter.limit ?? 20;
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be an integer of at least 1, got ${limit}`);
  const res = await loadQueries(schema).list_jobs.run(db, {
    status: filter.status ?? null,
    queue: filter.queue ?? null,
    task: filter.task ?? null,
    limit,
  });
  return res.rows.map(jobSummary);
}

/** The fields a job list shows, from a row of sql/admin/list_jobs.sql or show_job.sql. */
export function jobSummary(r: Omit<JobRow, 'payload' | 'errors' | 'result' | 'locked_at'>): JobSummary {
  return {
    id: String(r.id),
    queue: r.queue,
    task: r.task,
    status: r.status as JobStatus,
    priority: r.priority,
    runAt: iso(r.run_at)!,
    attempts: r.attempts,
    maxAttempts: r.max_attempts,
    jobKey: r.job_key,
    lockedBy: r.locked_by,
    lastError: r.last_error,
    createdAt: iso(r.created_at)!,
    startedAt: iso(r.started_at),
    finishedAt: iso(r.finished_at),
  };
}

/** One job with its payload, result and error history; throws JobNotFoundError. */
export async function getJob(db: Queryable, schema: string, id: string | number): Promise<JobDetail> {
  const jobId = parseJobId(id);
  const res = await loadQueries(schema).show_job.run(db, { id: jobId });
  const r = res.rows[0];
  if (!r) throw new JobNotFoundError(jobId);
  return {
    ...jobSummary(r),
    lockedAt: iso(r.locked_at),
    payload: r.payload,
    lastError: r.last_error,
    errors: r.errors,
    result: r.result,
  };
}

export interface StatusChange {
  id: string;
  status: JobStatus;
}

/**
 * Runs a failed, cancelled or completed job again now. Throws JobNotFoundError, and
 * JobStateError for a queued job (runJobNow moves it) or a running one.
 */
export async function retryJob(db: Queryable, schema: string, id: string | number): Promise<StatusChange> {
  return requeue(db, schema, 'retry_job', id);
}

/** Runs a queued job now instead of at its run_at. Throws JobNotFoundError, and JobStateError when it is not queued. */
export async function runJobNow(db: Queryable, schema: string, id: string | number): Promise<StatusChange> {
  return requeue(db, schema, 'run_job_now', id);
}

async function requeue(db: Queryable, schema: string, fn: 'retry_job' | 'run_job_now', id: string | number): Promise<StatusChange> {
  const jobId = parseJobId(id);
  let status: JobStatus | null | undefined;
  try {
    status = (await loadQueries(schema)[fn].run(db, { id: jobId })).rows[0]?.status as JobStatus | null;
  } catch (err) {
    // the SQL function refuses a job in the wrong state, naming the state and what to do instead
    const e = err as { code?: string; message: string };
    if (e.code === '55000' && e.message.startsWith('sluice: ')) {
      throw new JobStateError(jobId, /is (\w+)/.exec(e.message)?.[1] ?? 'unknown', e.message.slice('sluice: '.length));
    }
    throw err;
  }
  if (status === null || status === undefined) throw new JobNotFoundError(jobId);
  return { id: jobId, status };
}

/**
 * Cancels a queued or running job (a running handler is told to abort). Throws JobNotFoundError,
 * and JobStateError when the job had already completed or failed.
 */
export async function cancelJob(db: Queryable, schema: string, id: string | number): Promise<StatusChange> {
  const jobId = parseJobId(id);
  const res = await loadQueries(schema).cancel_job.run(db, { id: jobId });
  const status = res.rows[0]?.status as JobStatus | null;
  if (status === null || status === undefined) throw new JobNotFoundError(jobId);
  if (status !== 'cancelled') {
    throw new JobStateError(jobId, status, `job ${jobId} is already ${status}: nothing to cancel`);
  }
  return { id: jobId, status };
}

/**
 * Deletes a job that is not running (with its payload, result and errors). Throws
 * JobNotFoundError, and JobStateError for a running job (cancel it first).
 */
export async function deleteJob(db: Queryable, schema: string, id: string | number): Promise<StatusChange> {
  const jobId = parseJobId(id);
  let status: JobStatus | null | undefined;
  try {
    status = (await loadQueries(schema).delete_job.run(db, { id: jobId })).rows[0]?.status as JobStatus | null;
  } catch (err) {
    const e = err as { code?: string; message: string };
    if (e.code === '55000' && e.message.startsWith('sluice: ')) throw new JobStateError(jobId, 'running', e.message.slice('sluice: '.length));
    throw err;
  }
  if (status === null || status === undefined) throw new JobNotFoundError(jobId);
  return { id: jobId, status };
}
