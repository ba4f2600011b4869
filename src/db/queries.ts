// Every statement sluice runs, each from its sql/ file, with its parameters and rows typed. Loaded
// once per schema and setting; callers write `q.claim_jobs.run(client, { queues, limit, workerId })`.
import { readSqlFile } from './sql.js';
import { Statement, type StatementOptions } from './statement.js';

/** Epoch milliseconds as PostgreSQL's date_part returns them (float8). */
type EpochMs = number;

export interface ClaimRow {
  id: string;
  queue: string;
  task: string;
  payload: Record<string, unknown>;
  priority: number;
  attempts: number;
  max_attempts: number;
  lock_token: string;
  job_key: string | null;
  traceparent: string | null;
  run_at_ms: EpochMs;
  created_at_ms: EpochMs;
  /** How long the job had been due when claimed, by the server's clock (not from claim_controlled_jobs). */
  due_ms?: number;
}

/** A row of claim_controlled_jobs: a claimed job, or (id null) a queue a limit held back. */
export type ControlledClaimRow = (ClaimRow & { retry_ms: null }) | { id: null; queue: string; retry_ms: number | null };

export interface JobRow {
  id: string;
  queue: string;
  task: string;
  payload: Record<string, unknown>;
  status: string;
  priority: number;
  run_at: Date;
  attempts: number;
  max_attempts: number;
  job_key: string | null;
  last_error: string | null;
  errors: { attempt: number; at: string; error: string }[];
  result: unknown;
  locked_by: string | null;
  locked_at: Date | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
}

export interface WorkerRow {
  id: string;
  host: string;
  pid: number;
  queues: string[];
  /** null for workers of sluice before version 7 of the schema (they took every task). */
  tasks: string[] | null;
  concurrency: number;
  pool_size: number;
  version: string | null;
  started_at: Date;
  heartbeat_at: Date;
  heartbeat_age_seconds: number;
  alive: boolean;
  running: number;
}

interface Def<P extends object, R extends object> {
  file: string;
  options?: Partial<StatementOptions>;
  /** Carries the types only. */
  readonly types?: [P, R];
}

/** A statement's file and its parameter and row types (the types exist only for the compiler). */
function def<P extends object = Record<string, never>, R extends object = Record<string, unknown>>(
  file: string,
  options?: Partial<StatementOptions>,
): Def<P, R> {
  return { file, options };
}

// Worker statements (sql/queries) are prepared once per connection; operator and setup
// statements run rarely, unnamed.
const rare = { prepared: false } as const;
const catalog = {
  claim_jobs: def<{ queues: string[]; limits: number[]; windowsMs: number[]; tasks: string[]; workerId: string }, ClaimRow>('queries/claim_jobs.sql'),
  claim_jobs_one_queue: def<{ queue: string; limit: number; windowMs: number; tasks: string[]; workerId: string }, ClaimRow>('queries/claim_jobs_one_queue.sql', {
    literals: ['limit'],
  }),
  claim_controlled_jobs: def<{ queues: string[]; limits: number[]; tasks: string[]; workerId: string }, ControlledClaimRow>(
    'queries/claim_controlled_jobs.sql',
  ),
  controlled_queues: def<Record<string, never>, { name: string }>('queries/controlled_queues.sql'),
  enqueue_cron: def<
    { name: string; tick: string; task: string; payload: string; queue: string | null; priority: number | null; maxAttempts: number | null },
    { id: string | null }
  >('queries/enqueue_cron.sql'),
  cron_last_tick: def<{ name: string }, { tick: Date | null }>('queries/cron_last_tick.sql'),
  snooze_jobs: def<{ snoozes: string }, { id: string }>('queries/snooze_jobs.sql'),
  jobs_before_window: def<{ queue: string; tasks: string[]; windowMs: number }, { waiting: boolean }>('queries/jobs_before_window.sql'),
  complete_jobs: def<{ completions: string }, { refused: string }>('queries/complete_jobs.sql'),
  delete_completed_jobs: def<{ completions: string }, { refused: string }>('queries/delete_completed_jobs.sql'),
  fail_jobs: def<{ failures: string }, { id: string; status: 'queued' | 'failed'; run_at: Date }>('queries/fail_jobs.sql'),
  release_jobs: def<{ ids: string[]; tokens: string[] }, { id: string }>('queries/release_jobs.sql'),
  release_orphans: def<{ workerId: string; runningIds: string[]; olderThanMs: number }, { id: string }>('queries/release_orphans.sql'),
  heartbeat: def<{ workerId: string }, { id: string; db_ms: number }>('queries/heartbeat.sql'),
  register_worker: def<{ id: string; host: string; pid: number; queues: string[]; tasks: string[]; concurrency: number; poolSize: number; version: string }>(
    'queries/register_worker.sql',
  ),
  deregister_worker: def<{ id: string }>('queries/deregister_worker.sql'),
  rescue_jobs: def<{ deadAfterMs: number }, { id: string; status: string; queue: string; task: string; locked_by: string | null }>(
    'queries/rescue_jobs.sql',
  ),
  lost_jobs: def<{ ids: string[]; tokens: string[] }, { id: string; status: string | null }>('queries/lost_jobs.sql'),
  // on the LISTEN connection, which is always a direct one
  wake_lock_take: def<{ queue: string }, { state: 'held' | 'producers' | 'worker' }>('queries/wake_lock_take.sql'),
  wake_lock_release: def<{ queue: string }, { released: boolean }>('queries/wake_lock_release.sql'),
  queue_depth: def<Record<string, never>, { queue: string; status: string; n: number; oldest: number | null }>('queries/queue_depth.sql'),
  prune_lock: def<Record<string, never>, { got: boolean }>('queries/prune_lock.sql'),
  prune_cron_ticks: def<{ keepMs: number }>('queries/prune_cron_ticks.sql'),
  prune_jobs: def<{ keepCompletedMs: number; keepFailedMs: number; batchSize: number }>('queries/prune_jobs.sql'),
  jobs_upkeep: def<Record<string, never>, { dead: string; recorded_pages: number; pages: number; may_vacuum: boolean }>('queries/jobs_upkeep.sql'),
  // database health, read by the worker's health check (every few seconds), `sluice status` and
  // the dashboard through readHealth, which loads its own statements: unnamed, so that they work
  // behind a transaction pooler too
  health_xmin: def<Record<string, never>, { pid: number | null; application_name: string | null; state: string | null; since: Date | null; age_ms: number | null }>(
    'queries/health_xmin.sql',
    rare,
  ),
  health_jobs_table: def<
    Record<string, never>,
    { live_rows: number; dead_rows: number; table_bytes: number; index_bytes: number; last_vacuum: Date | null; last_autovacuum: Date | null }
  >('queries/health_jobs_table.sql', rare),
  health_server: def<Record<string, never>, { notify_queue_usage: number; max_connections: number; used: number; by_sluice: number }>(
    'queries/health_server.sql',
    rare,
  ),
  vacuum_lock: def<Record<string, never>, { got: boolean }>('queries/vacuum_lock.sql', rare),
  vacuum_unlock: def('queries/vacuum_unlock.sql', rare),
  vacuum_timeout: def<{ timeout: string }>('queries/vacuum_timeout.sql', rare),
  vacuum_reset_timeout: def('queries/vacuum_reset_timeout.sql', rare),
  vacuum_jobs: def('queries/vacuum_jobs.sql', rare),
  vacuum_jobs_skip_locked: def('queries/vacuum_jobs_skip_locked.sql', rare),
  analyze_jobs: def('queries/analyze_jobs.sql', rare),
  cancel_backend: def<{ pid: number }>('queries/cancel_backend.sql', rare),
  // enqueueing runs on the caller's connections, which may sit behind any pooler: never prepared
  add_job: def<
    { task: string; payload: string; queue: string | null; runAt: string | null; priority: number | null; maxAttempts: number | null; jobKey: string | null; concurrencyKey: string | null; traceparent: string | null },
    { id: string }
  >('queries/add_job.sql', rare),
  add_jobs: def<{ jobs: string }, { ids: string[] }>('queries/add_jobs.sql', rare),
  migrate_lock: def('migrate/lock.sql', rare),
  migrate_prepare: def('migrate/prepare.sql', rare),
  migrate_applied: def<Record<string, never>, { version: number }>('migrate/applied.sql', rare),
  migrate_record: def<{ version: number; name: string }>('migrate/record.sql', rare),
  migrate_installed: def<Record<string, never>, { installed: boolean }>('migrate/installed.sql', rare),
  migrate_version: def<Record<string, never>, { version: number }>('migrate/version.sql', rare),
  roles_create: def('roles/create.sql', rare),
  roles_grants: def('roles/grants.sql', rare),
  roles_exist: def<Record<string, never>, { exist: boolean }>('roles/exist.sql', rare),
  roles_login: def<{ name: string }, { rolname: string; rolcanlogin: boolean }>('roles/login.sql', rare),
  queue_status: def<
    Record<string, never>,
    { queue: string; runnable: number; scheduled: number; running: number; completed: number; failed: number; cancelled: number; oldest_runnable_seconds: number | null }
  >('admin/queue_status.sql', rare),
  workers: def<{ rescueAfterMs: number }, WorkerRow>('admin/workers.sql', rare),
  list_jobs: def<{ status: string | null; queue: string | null; task: string | null; limit: number }, Omit<JobRow, 'payload' | 'errors' | 'result' | 'locked_at'>>(
    'admin/list_jobs.sql',
    rare,
  ),
  show_job: def<{ id: string }, JobRow>('admin/show_job.sql', rare),
  retry_job: def<{ id: string }, { status: string | null }>('admin/retry_job.sql', rare),
  cancel_job: def<{ id: string }, { status: string | null }>('admin/cancel_job.sql', rare),
  run_job_now: def<{ id: string }, { status: string | null }>('admin/run_job_now.sql', rare),
  queued_tasks: def<Record<string, never>, { queue: string; task: string; queued: number }>('admin/queued_tasks.sql', rare),
  queue_list: def<
    Record<string, never>,
    {
      name: string;
      concurrency: number | null;
      key_concurrency: number | null;
      rate_limit: number | null;
      rate_period_ms: number;
      paused: boolean;
      queued: number;
      runnable: number;
      running: number;
      oldest_runnable_ms: number | null;
    }
  >('admin/queue_list.sql', rare),
  set_queue_limits: def<{ queue: string; concurrency: number | null; keyConcurrency: number | null; rateLimit: number | null; ratePeriodMs: number }>(
    'admin/set_queue_limits.sql',
    rare,
  ),
  pause_queue: def<{ queue: string }>('admin/pause_queue.sql', rare),
  resume_queue: def<{ queue: string }>('admin/resume_queue.sql', rare),
  cron_ticks: def<{ names: string[] }, { name: string; tick: Date; job_id: string | null; status: string | null }>('admin/cron_ticks.sql', rare),
  budget: def<
    Record<string, never>,
    { max_connections: number; superuser_reserved: number; reserved: number; in_use: number; sluice: number; others: number }
  >('admin/budget.sql', rare),
  budget_sessions: def<Record<string, never>, { application_name: string; sessions: number }>('admin/budget_sessions.sql', rare),
  delete_job: def<{ id: string }, { status: string | null }>('admin/delete_job.sql', rare),
  jobs_bounds: def<Record<string, never>, { min_id: string | null; max_id: string | null }>('admin/jobs_bounds.sql', rare),
  jobs_page: def<
    { before: string; floor: string; status: string | null; queue: string | null; task: string | null; jobKey: string | null; error: string | null; limit: number },
    Omit<JobRow, 'payload' | 'errors' | 'result' | 'locked_at'>
  >('admin/jobs_page.sql', rare),
  dashboard_throughput: def<Record<string, never>, { queue: string; minute_ms: number; completed: number; failed: number; cancelled: number }>(
    'admin/dashboard_throughput.sql',
    rare,
  ),
};

type Catalog = typeof catalog;
export type QueryName = keyof Catalog;
export type Queries = { [K in QueryName]: Catalog[K] extends Def<infer P, infer R> ? Statement<P, R> : never };

export interface QueryOptions {
  /** false: no named prepared statements at all (a transaction pooler in front of PostgreSQL). */
  preparedStatements?: boolean;
}

const cache = new Map<string, Queries>();

export function loadQueries(schema: string, opts: QueryOptions = {}): Queries {
  const prepared = opts.preparedStatements ?? true;
  const key = `${schema}\u0000${prepared}`;
  let q = cache.get(key);
  if (!q) {
    q = Object.fromEntries(
      Object.entries(catalog).map(([name, d]) => {
        const options: StatementOptions = { prepared: prepared && (d.options?.prepared ?? true), literals: d.options?.literals };
        return [name, new Statement(`${schema}.${name}`, readSqlFile(d.file, schema), options)];
      }),
    ) as Queries;
    cache.set(key, q);
  }
  return q;
}

/** The sql/ file a statement comes from (tests pick the worker's own statements by it). */
export function queryFile(name: QueryName): string {
  return catalog[name].file;
}
