// What the dashboard shows and does, as plain functions over a connection: the read models of its
// pages and its actions. Actions call the same admin functions as the CLI (src/admin/), which
// call the same SQL functions (sluice.retry_job, cancel_job, run_job_now, delete_job).
import { readBudget, type Budget } from '../admin/budget.js';
import { cancelJob, deleteJob, getJob, JOB_STATUSES, jobSummary, parseJobId, retryJob, runJobNow, type JobDetail, type JobStatus, type JobSummary, type StatusChange } from '../admin/jobs.js';
import { listQueues, pauseQueue, resumeQueue, setQueueLimits } from '../admin/queues.js';
import { listWorkers, type WorkerStatus } from '../admin/status.js';
import { loadQueries, type JobRow } from '../db/queries.js';
import type { Queryable } from '../db/statement.js';
import { JobNotFoundError, JobStateError } from '../errors.js';
import type pg from 'pg';

/** Bad input from a dashboard request: answered with 400 and the message. */
export class DashboardInputError extends Error {}

export interface QueueOverview {
  queue: string;
  runnable: number;
  scheduled: number;
  running: number;
  /** Finished in the last hour. */
  completed: number;
  failed: number;
  cancelled: number;
  oldestRunnableMs: number | null;
  /** Per minute over the last hour (epoch ms of each minute), for the charts. */
  series: { minutes: number[]; completed: number[]; failed: number[] };
  /** Live workers that take this queue. */
  workers: number;
  /** sluice.queues: no worker starts its jobs while paused. */
  paused: boolean;
  /** Limits across all workers (null: none). */
  limits: { concurrency: number | null; keyConcurrency: number | null; rateLimit: number | null; ratePeriodMs: number };
}

export interface Overview {
  queues: QueueOverview[];
  liveWorkers: number;
}

const MINUTE = 60_000;

export async function readOverview(db: Queryable, schema: string, rescueAfterMs: number): Promise<Overview> {
  const q = loadQueries(schema);
  // the queues with settings or unfinished jobs, read as `sluice queue list` reads them
  const unfinished = await listQueues(db, schema);
  const finished = (await q.dashboard_throughput.run(db, {})).rows;
  const workers = (await listWorkers(db, schema, rescueAfterMs)).filter((w) => w.alive);
  const names = new Set([...unfinished.map((r) => r.name), ...finished.map((r) => r.queue), ...workers.flatMap((w) => w.queues)]);
  const last = Math.floor(Date.now() / MINUTE) * MINUTE;
  const minutes = Array.from({ length: 60 }, (_, i) => last - (59 - i) * MINUTE);
  const queues = [...names].sort().map((queue): QueueOverview => {
    const u = unfinished.find((r) => r.name === queue);
    const f = finished.filter((r) => r.queue === queue);
    const at = (m: number) => f.find((r) => r.minute_ms === m);
    return {
      queue,
      runnable: u?.runnable ?? 0,
      scheduled: u ? u.queued - u.runnable : 0,
      running: u?.running ?? 0,
      completed: f.reduce((n, r) => n + r.completed, 0),
      failed: f.reduce((n, r) => n + r.failed, 0),
      cancelled: f.reduce((n, r) => n + r.cancelled, 0),
      oldestRunnableMs: u?.oldestRunnableAgeMs ?? null,
      series: { minutes, completed: minutes.map((m) => at(m)?.completed ?? 0), failed: minutes.map((m) => at(m)?.failed ?? 0) },
      workers: workers.filter((w) => w.queues.includes(queue)).length,
      paused: u?.paused ?? false,
      limits: { concurrency: u?.concurrency ?? null, keyConcurrency: u?.keyConcurrency ?? null, rateLimit: u?.rateLimit ?? null, ratePeriodMs: u?.ratePeriodMs ?? 1000 },
    };
  });
  return { queues, liveWorkers: workers.length };
}

export interface JobsFilter {
  queue?: string;
  task?: string;
  state?: JobStatus;
  key?: string;
  /** Text in the last error (case-insensitive). */
  error?: string;
}

export interface JobsPage {
  jobs: JobSummary[];
  /** Pass as `before` for the next (older) page; null when no older job can match. */
  next: string | null;
}

/** Ids one statement of the list may read at most (its window), and windows per page. */
export const SCAN_WINDOW = 100_000n;
const WINDOWS_PER_PAGE = 5;
const TEXT_MAX = 1024;

/** A filter from query parameters or a JSON body; throws DashboardInputError naming the bad field. */
export function parseFilter(input: Record<string, unknown>): JobsFilter {
  const out: JobsFilter = {};
  for (const field of ['queue', 'task', 'key', 'error'] as const) {
    const v = input[field];
    if (v === undefined || v === null || v === '') continue;
    if (typeof v !== 'string') throw new DashboardInputError(`${field} must be a string`);
    if (v.length > TEXT_MAX) throw new DashboardInputError(`${field} is longer than ${TEXT_MAX} characters`);
    out[field] = v;
  }
  const state = input.state;
  if (state !== undefined && state !== null && state !== '') {
    if (!JOB_STATUSES.includes(state as JobStatus)) throw new DashboardInputError(`state must be one of ${JOB_STATUSES.join(', ')}, got ${JSON.stringify(state)}`);
    out.state = state as JobStatus;
  }
  return out;
}

function likePattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/**
 * A page of jobs newest first, ids below `before`. Each statement reads at most SCAN_WINDOW ids
 * (a rare filter among millions of finished jobs costs a bounded scan per page, not a walk of
 * the table); a page that is not full after WINDOWS_PER_PAGE windows ends early with `next`.
 */
export async function pageJobs(db: Queryable, schema: string, filter: JobsFilter, before?: string, limit = 50): Promise<JobsPage> {
  if (before !== undefined) {
    try {
      before = parseJobId(before);
    } catch {
      throw new DashboardInputError(`before must be a job id, got ${JSON.stringify(before)}`);
    }
  }
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new DashboardInputError(`limit must be an integer from 1 to 1000, got ${limit}`);
  const q = loadQueries(schema);
  const bounds = (await q.jobs_bounds.run(db, {})).rows[0]!;
  if (bounds.min_id === null || bounds.max_id === null) return { jobs: [], next: null };
  const minId = BigInt(bounds.min_id);
  let upper = before !== undefined ? BigInt(before) : BigInt(bounds.max_id) + 1n;
  const rows: Omit<JobRow, 'payload' | 'errors' | 'result' | 'locked_at'>[] = [];
  for (let i = 0; i < WINDOWS_PER_PAGE && upper > minId && rows.length < limit; i++) {
    const floor = upper - SCAN_WINDOW > minId ? upper - SCAN_WINDOW : minId;
    const found = await q.jobs_page.run(db, {
      before: String(upper),
      floor: String(floor),
      status: filter.state ?? null,
      queue: filter.queue ?? null,
      task: filter.task ?? null,
      jobKey: filter.key ?? null,
      error: filter.error === undefined ? null : likePattern(filter.error),
      limit: limit - rows.length,
    });
    rows.push(...found.rows);
    upper = rows.length === limit ? BigInt(rows[rows.length - 1]!.id) : floor;
  }
  return { jobs: rows.map(jobSummary), next: upper > minId ? String(upper) : null };
}

export interface Attempt {
  attempt: number;
  /** When it started: known for the latest attempt only (the jobs table keeps one started_at). */
  startedAt: string | null;
  /** When it ended (the error's time for a failed one). */
  endedAt: string | null;
  outcome: 'running' | 'completed' | 'failed' | 'retried' | 'cancelled' | 'unknown';
  error: string | null;
}

export interface JobView extends JobDetail {
  attemptList: Attempt[];
}

/**
 * One job with its attempts as the table records them: the last 10 errors (attempt, time,
 * text) and the started_at / finished_at of the latest attempt. Earlier attempts' start times
 * are not recorded.
 */
export async function readJob(db: Queryable, schema: string, id: string): Promise<JobView> {
  let jobId: string;
  try {
    jobId = parseJobId(id);
  } catch (err) {
    throw new DashboardInputError((err as Error).message);
  }
  const job = await getJob(db, schema, jobId);
  const attempts: Attempt[] = [];
  for (let n = 1; n <= job.attempts; n++) {
    const err = job.errors.filter((e) => e.attempt === n).pop();
    const latest = n === job.attempts;
    let outcome: Attempt['outcome'] = err ? (latest && job.status === 'failed' ? 'failed' : 'retried') : 'unknown';
    if (latest && !err) outcome = job.status === 'running' ? 'running' : job.status === 'completed' ? 'completed' : job.status === 'cancelled' ? 'cancelled' : 'unknown';
    attempts.push({
      attempt: n,
      startedAt: latest ? job.startedAt : null,
      endedAt: err?.at ?? (latest ? job.finishedAt : null),
      outcome,
      error: err?.error ?? null,
    });
  }
  return { ...job, attemptList: attempts };
}

export async function readWorkers(db: Queryable, schema: string, rescueAfterMs: number, budget: Budget): Promise<(WorkerStatus & { connected: number | null })[]> {
  const workers = await listWorkers(db, schema, rescueAfterMs);
  return workers.map((w) => ({ ...w, connected: budget.sluice.find((b) => b.id === w.id)?.connected ?? null }));
}

export { readBudget };

export const JOB_ACTIONS = {
  retry: { apply: retryJob, states: ['failed', 'cancelled', 'completed'] },
  cancel: { apply: cancelJob, states: ['queued', 'running'] },
  'run-now': { apply: runJobNow, states: ['queued'] },
  delete: { apply: deleteJob, states: ['failed', 'cancelled', 'completed', 'queued'] },
} as const satisfies Record<string, { apply: (db: Queryable, schema: string, id: string) => Promise<StatusChange>; states: readonly JobStatus[] }>;
export type JobAction = keyof typeof JOB_ACTIONS;

export function parseAction(name: string): JobAction {
  if (!Object.hasOwn(JOB_ACTIONS, name)) throw new DashboardInputError(`action must be one of ${Object.keys(JOB_ACTIONS).join(', ')}, got ${JSON.stringify(name)}`);
  return name as JobAction;
}

export async function applyJobAction(db: Queryable, schema: string, action: JobAction, id: string): Promise<StatusChange> {
  return JOB_ACTIONS[action].apply(db, schema, id);
}

export interface BulkResult {
  done: number;
  /** Jobs that changed state in between (the action's function refused them), or vanished. */
  skipped: number;
  /** Pass as `before` to go on with older matches; null when none are left. */
  next: string | null;
}

/** Jobs one bulk request acts on at most; the caller goes on with `next`. */
export const BULK_MAX = 1000;

/**
 * The action on every job that matches the filter, one by one through the same function as a
 * single action. The filter must name a state the action applies to, so that a bulk retry never
 * means "every completed job" by accident.
 */
export async function bulkJobAction(pool: pg.Pool, schema: string, action: JobAction, filter: JobsFilter, before?: string): Promise<BulkResult> {
  const states: readonly JobStatus[] = JOB_ACTIONS[action].states;
  if (!filter.state || !states.includes(filter.state)) {
    throw new DashboardInputError(`a bulk ${action} needs the state filter set to one of ${states.join(', ')}`);
  }
  const page = await pageJobs(pool, schema, filter, before, BULK_MAX);
  let done = 0;
  let skipped = 0;
  for (const job of page.jobs) {
    try {
      await applyJobAction(pool, schema, action, job.id);
      done++;
    } catch (err) {
      if (!(err instanceof JobStateError || err instanceof JobNotFoundError)) throw err;
      skipped++;
    }
  }
  return { done, skipped, next: page.next };
}

export const QUEUE_ACTIONS = ['pause', 'resume', 'limits'] as const;
export type QueueAction = (typeof QUEUE_ACTIONS)[number];

function limitField(body: Record<string, unknown>, name: string): number | null {
  const v = body[name];
  if (v === undefined || v === null || v === '') return null;
  if (typeof v !== 'number') throw new DashboardInputError(`${name} must be a number or null, got ${JSON.stringify(v)}`);
  return v;
}

/** Pause, resume or set the limits of a queue, through the functions `sluice queue` uses. */
export async function applyQueueAction(db: Queryable, schema: string, queue: string, action: string, body: Record<string, unknown>): Promise<{ queue: string; action: QueueAction }> {
  if (!(QUEUE_ACTIONS as readonly string[]).includes(action)) throw new DashboardInputError(`queue action must be one of ${QUEUE_ACTIONS.join(', ')}, got ${JSON.stringify(action)}`);
  if (action === 'pause') await pauseQueue(db, schema, queue);
  else if (action === 'resume') await resumeQueue(db, schema, queue);
  else {
    await setQueueLimits(db, schema, queue, {
      concurrency: limitField(body, 'concurrency'),
      keyConcurrency: limitField(body, 'keyConcurrency'),
      rateLimit: limitField(body, 'rateLimit'),
      ratePeriodMs: limitField(body, 'ratePeriodMs') ?? undefined,
    });
  }
  return { queue, action: action as QueueAction };
}
