// The one configuration schema. Every key has a doc, a default, a format and, where useful, an
// environment variable. Key names are a public contract: users' files and scripts rely on them.
// The SluiceConfig type is derived from the schema, so the two cannot drift apart.
import convict from 'convict';
import { assertIdentifier } from '../db/sql.js';
import { checkCron, type CronEntry } from './cron.js';
import { checkQueues, type QueueSetting } from './queues.js';
import { parseDatabaseUrl } from '../db/target.js';

function intAtLeast(name: string, min: number) {
  return {
    name,
    validate(value: unknown) {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
        throw new Error(`must be an integer >= ${min}`);
      }
    },
    coerce: (v: unknown) => (typeof v === 'string' && v.trim() !== '' ? Number(v) : v),
  };
}

convict.addFormat(intAtLeast('int>=1', 1));
convict.addFormat(intAtLeast('int>=0', 0));
convict.addFormat(intAtLeast('int>=-1', -1));
// convict's own Boolean takes any string as true ("maybe" would switch a setting on)
const BOOLEAN_WORDS: Record<string, boolean> = { true: true, false: false, '1': true, '0': false, yes: true, no: false, on: true, off: false };
convict.addFormat({
  name: 'boolean',
  validate(value: unknown) {
    if (typeof value !== 'boolean') throw new Error('must be true or false (also 1/0, yes/no, on/off)');
  },
  coerce: (v: unknown) => (typeof v === 'string' && v.trim().toLowerCase() in BOOLEAN_WORDS ? BOOLEAN_WORDS[v.trim().toLowerCase()] : v),
});
convict.addFormat({
  name: 'ratio',
  validate(value: unknown) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1) throw new Error('must be a number from 0 to 1');
  },
  coerce: (v: unknown) => (typeof v === 'string' && v.trim() !== '' ? Number(v) : v),
});
convict.addFormat({
  name: 'identifier',
  validate(value: unknown) {
    assertIdentifier(String(value));
  },
});
convict.addFormat({
  name: 'postgres-url',
  validate(value: unknown) {
    if (value === '') return;
    if (typeof value !== 'string' || !/^postgres(ql)?:\/\//.test(value)) {
      throw new Error('must be a postgres:// or postgresql:// URL, or empty for the embedded database');
    }
    // several hosts (h1:5432,h2:5432) or target_session_attrs: sluice chooses the host itself
    if (/^postgres(ql)?:\/\/[^/?#]*,/.test(value) || /[?&]target_session_attrs=/.test(value)) {
      parseDatabaseUrl(value);
      return;
    }
    try {
      new URL(value);
    } catch {
      throw new Error('is not a valid URL');
    }
  },
});
convict.addFormat({
  name: 'queue-list',
  validate: checkQueues,
  coerce: (v: unknown) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()) : v),
});
convict.addFormat({ name: 'cron-list', validate: checkCron });

export const configSchema = {
  database: {
    url: {
      doc: 'PostgreSQL connection URL. Several hosts (postgres://u@h1:5432,h2:5432/db?target_session_attrs=read-write) are tried in order and only a writable primary is kept. Empty: `sluice start` runs an embedded PostgreSQL in database.embeddedDir.',
      format: 'postgres-url',
      default: '',
      env: 'DATABASE_URL',
      sensitive: true,
    },
    listenUrl: {
      doc: 'Direct connection for the LISTEN connection when database.url points at a transaction pooler (PgBouncer); empty: database.url. May name several hosts like database.url.',
      format: 'postgres-url',
      default: '',
      env: 'SLUICE_LISTEN_URL',
      sensitive: true,
    },
    pooler: {
      doc: 'What database.url points at: none (PostgreSQL itself, or a session pooler) or transaction (PgBouncer in transaction mode: no prepared statements, no session state; LISTEN only through database.listenUrl, else polling every worker.pollMs).',
      format: ['none', 'transaction'],
      default: 'none',
      env: 'SLUICE_POOLER',
    },
    poolSize: {
      doc: 'Connections in the pool that claims, completes and serves handlers. The process holds at most poolSize + 1 (the listener).',
      format: 'int>=1',
      default: 4,
      env: 'SLUICE_POOL_SIZE',
    },
    schema: {
      doc: 'Schema that holds sluice tables and functions (a lowercase identifier).',
      format: 'identifier',
      default: 'sluice',
      env: 'SLUICE_SCHEMA',
    },
    connectionTimeoutMs: {
      doc: 'How long a borrow waits for a pool connection (or a connect attempt) before failing loudly.',
      format: 'int>=1',
      default: 10000,
      env: 'SLUICE_CONNECTION_TIMEOUT_MS',
    },
    statementTimeoutMs: {
      doc: 'Server-side statement_timeout on every pool connection (0 disables). Handlers may SET LOCAL their own.',
      format: 'int>=0',
      default: 60000,
      env: 'SLUICE_STATEMENT_TIMEOUT_MS',
    },
    idleInTransactionTimeoutMs: {
      doc: 'Server-side idle_in_transaction_session_timeout: a transaction left open is ended by the server.',
      format: 'int>=0',
      default: 60000,
      env: 'SLUICE_IDLE_IN_TRANSACTION_TIMEOUT_MS',
    },
    retryOnStartup: {
      doc: 'At start, keep retrying (with backoff) while the database is unreachable or not migrated yet; false: fail at once.',
      format: 'boolean',
      default: true,
      env: 'SLUICE_RETRY_ON_STARTUP',
    },
    strictBudget: {
      doc: "Refuse to start when poolSize + 1 does not fit in the server's free connections (otherwise warn).",
      format: 'boolean',
      default: false,
      env: 'SLUICE_STRICT_BUDGET',
    },
    listenerCheckMs: {
      doc: 'How often the LISTEN connection proves itself with a ping through NOTIFY; a ping unanswered this long replaces it.',
      format: 'int>=1',
      default: 5000,
      env: 'SLUICE_LISTENER_CHECK_MS',
    },
    embeddedDir: {
      doc: 'Data folder of the embedded PostgreSQL used when database.url is empty; it survives restarts.',
      format: String,
      default: '.sluice/pgdata',
      env: 'SLUICE_EMBEDDED_DIR',
    },
  },
  worker: {
    concurrency: {
      doc: 'Jobs run at once in each queue without its own concurrency in worker.queues (the mergeMap bound of its runner). May exceed database.poolSize: a running handler holds no connection.',
      format: 'int>=1',
      default: 10,
      env: 'SLUICE_CONCURRENCY',
    },
    tasks: {
      doc: 'Folder of task handler modules (one file per task, named after it), or one module exporting a map of tasks.',
      format: String,
      default: 'tasks',
      env: 'SLUICE_TASKS',
    },
    queues: {
      doc: 'Queues this worker takes jobs from: a list of names (comma-separated in the environment), or a map of name to settings, e.g. { default: {}, emails: { concurrency: 5 } }. Each queue has its own slots.',
      format: 'queue-list',
      default: ['default'] as QueueSetting[],
      env: 'SLUICE_QUEUES',
    },
    prefetch: {
      doc: 'Jobs each queue claims ahead of its free slots, held under the lease and started as slots free (fewer, larger claims under load); released at shutdown. They count as running in the database and in sluice status. Not used for queues with limits or a pause. 0: claim only for free slots.',
      format: 'int>=0',
      default: 0,
      env: 'SLUICE_PREFETCH',
    },
    claimWindowMs: {
      doc: "Once a queue has caught up, its claims leave out priority-0 jobs (the default priority) due more than this many ms ago: a claim then starts at the window's edge of the index instead of walking the dead entries that a long transaction keeps at its head. Once per window a separate query looks for such a job (a late commit, a run_at in the past, a job put back) and, if one waits, the next claim takes the whole queue: such a job waits at most about one window. 0: every claim takes the whole queue.",
      format: 'int>=0',
      default: 10000,
      env: 'SLUICE_CLAIM_WINDOW_MS',
    },
    shutdownGraceMs: {
      doc: 'On SIGTERM, how long running jobs may finish before they are aborted and put back to queued.',
      format: 'int>=0',
      default: 25000,
      env: 'SLUICE_SHUTDOWN_GRACE_MS',
    },
    rescueAfterMs: {
      doc: 'A worker silent for this long is presumed dead; its running jobs are put back to queued.',
      format: 'int>=1',
      default: 15000,
      env: 'SLUICE_RESCUE_AFTER_MS',
    },
    heartbeatMs: {
      doc: 'How often the worker records that it is alive: at most a third of rescueAfterMs. When not set, a fifth of rescueAfterMs, at most 2000.',
      format: 'int>=1',
      default: 2000,
      env: 'SLUICE_HEARTBEAT_MS',
    },
    pollMs: {
      doc: 'Safety poll for work whose notification was missed. Notifications are the fast path; with database.pooler=transaction and no database.listenUrl the poll is the only one, and 100 ms is a reasonable floor.',
      format: 'int>=1',
      default: 5000,
      env: 'SLUICE_POLL_MS',
    },
    jobTimeoutMs: {
      doc: 'Default time limit of a job (0: none). A task module may export its own timeoutMs.',
      format: 'int>=0',
      default: 0,
      env: 'SLUICE_JOB_TIMEOUT_MS',
    },
    retryBaseMs: {
      doc: 'Backoff of the first retry; each retry doubles it (with jitter) up to retryMaxMs.',
      format: 'int>=0',
      default: 1000,
      env: 'SLUICE_RETRY_BASE_MS',
    },
    retryMaxMs: {
      doc: 'Longest backoff between two attempts.',
      format: 'int>=0',
      default: 3600000,
      env: 'SLUICE_RETRY_MAX_MS',
    },
    keepCompletedMs: {
      doc: 'Completed jobs are deleted this long after they finished. 0: deleted as they complete, in the same statement (the result is not kept); -1: kept.',
      format: 'int>=-1',
      default: 86400000,
      env: 'SLUICE_KEEP_COMPLETED_MS',
    },
    keepFailedMs: {
      doc: 'Failed and cancelled jobs are deleted this long after they finished (0 keeps them).',
      format: 'int>=0',
      default: 604800000,
      env: 'SLUICE_KEEP_FAILED_MS',
    },
    pruneEveryMs: {
      doc: 'How often finished jobs past their retention are pruned (by one worker at a time).',
      format: 'int>=1',
      default: 60000,
      env: 'SLUICE_PRUNE_EVERY_MS',
    },
    vacuumDeadRows: {
      doc: 'Vacuum the jobs table (one worker at a time, checked every 5 s) once it holds more dead row versions than this, instead of waiting for autovacuum: dead versions slow claiming down. The same check analyzes the table once it has grown to twice the size its statistics knew, so that statements prepared while it was nearly empty are re-planned (whatever this setting). Needs the table owner role; 0 leaves vacuuming to autovacuum.',
      format: 'int>=0',
      default: 100000,
      env: 'SLUICE_VACUUM_DEAD_ROWS',
    },
  },
  health: {
    xminAgeWarnMs: {
      doc: "Warn (log, /readyz warning field, metric) when a session has held this database's xmin horizon this long: vacuum cannot remove the jobs table's dead rows meanwhile. 0: never.",
      format: 'int>=0',
      default: 300000,
      env: 'SLUICE_HEALTH_XMIN_AGE_WARN_MS',
    },
    deadRowsWarn: {
      doc: 'Warn when the jobs table holds more dead row versions than this (claims slow down as they pile up). 0: never.',
      format: 'int>=0',
      default: 1000000,
      env: 'SLUICE_HEALTH_DEAD_ROWS_WARN',
    },
    notifyQueueWarn: {
      doc: 'Warn when the NOTIFY queue is this full (pg_notification_queue_usage(), 0..1); when full, every notifying commit fails. 0: never.',
      format: 'ratio',
      default: 0.5,
      env: 'SLUICE_HEALTH_NOTIFY_QUEUE_WARN',
    },
    checkEveryMs: {
      doc: 'How often the worker reads these signals (one short borrow of a pool connection).',
      format: 'int>=1',
      default: 15000,
      env: 'SLUICE_HEALTH_CHECK_EVERY_MS',
    },
  },
  http: {
    enabled: {
      doc: 'Serve /healthz, /readyz and /metrics.',
      format: 'boolean',
      default: true,
      env: 'SLUICE_HTTP_ENABLED',
    },
    host: {
      doc: 'Address the HTTP server binds to (0.0.0.0 in a container).',
      format: String,
      default: '127.0.0.1',
      env: 'SLUICE_HTTP_HOST',
    },
    port: {
      doc: 'Port of the HTTP server (0 picks a free one).',
      format: 'port',
      default: 8787,
      env: 'SLUICE_HTTP_PORT',
    },
    dashboardToken: {
      doc: 'Token that opens /dashboard/ (login form or Authorization: Bearer). Empty: the dashboard is read-only and served only on a loopback http.host.',
      format: String,
      default: '',
      env: 'SLUICE_DASHBOARD_TOKEN',
      sensitive: true,
    },
  },
  cron: {
    doc: 'Recurring jobs: a list of { name, schedule (5 fields, or 6 with seconds first), timezone (IANA, default UTC), task, payload, queue, priority, maxAttempts, backfill (missed ticks to enqueue after downtime, default 0) }. One job per tick across all workers.',
    format: 'cron-list',
    default: [] as CronEntry[],
  },
  log: {
    level: {
      doc: 'Least severe level logged.',
      format: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'],
      default: 'info',
      env: 'SLUICE_LOG_LEVEL',
    },
    format: {
      doc: 'json, pretty, or auto (pretty when stdout is a terminal).',
      format: ['auto', 'json', 'pretty'],
      default: 'auto',
      env: 'SLUICE_LOG_FORMAT',
    },
  },
} as const;

type Widen<D> = D extends string ? string : D extends number ? number : D extends boolean ? boolean : D extends readonly string[] ? string[] : D;
type ValueOf<Leaf> = Leaf extends { format: readonly (infer U)[] } ? U : Leaf extends { default: infer D } ? Widen<D> : never;
type ConfigOf<S> = { -readonly [K in keyof S]: S[K] extends { default: unknown } ? ValueOf<S[K]> : ConfigOf<S[K]> };

/** The resolved configuration: every key of the schema with its value. */
export type SluiceConfig = ConfigOf<typeof configSchema>;

/** Any subset of the config, as a file or an API caller gives it. */
export type ConfigInput = { [K in keyof SluiceConfig]?: Partial<SluiceConfig[K]> };

export interface KeySpec {
  doc: string;
  default: unknown;
  env?: string;
  sensitive?: boolean;
}

/** Every key of the schema with its spec, in schema order: `[ ['database.url', spec], ... ]`. */
export function schemaKeys(): [string, KeySpec][] {
  const out: [string, KeySpec][] = [];
  const walk = (node: Record<string, unknown>, prefix: string) => {
    for (const [key, spec] of Object.entries(node)) {
      if (spec && typeof spec === 'object' && 'default' in spec) out.push([`${prefix}${key}`, spec as KeySpec]);
      else walk(spec as Record<string, unknown>, `${prefix}${key}.`);
    }
  };
  walk(configSchema as unknown as Record<string, unknown>, '');
  return out;
}
