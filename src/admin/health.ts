// Database health: what outside the queue makes it slow or stops it. A long transaction or an
// analytics reader holding the xmin horizon (vacuum cannot remove the jobs table's dead rows, and
// claims walk past them), dead rows piling up, the NOTIFY queue filling (then notifying commits
// fail), connections running out. `sluice status`, the worker's health check (log, /readyz,
// metrics) and the dashboard all read it from here. The SQL lives in sql/queries/health_*.sql.
import { loadQueries } from '../db/queries.js';
import type { Queryable } from '../db/statement.js';

export interface XminHolder {
  /** How long the holder's transaction (or statement) has been open. */
  ageMs: number;
  /** null for a prepared transaction (no session holds it). */
  pid: number | null;
  applicationName: string | null;
  /** pg_stat_activity.state (`idle in transaction`, `active`), or `prepared transaction <gid>`. */
  state: string | null;
  /** ISO time its transaction (or statement) started. */
  since: string | null;
}

export interface DatabaseHealth {
  /** The oldest holder of this database's xmin horizon; null when no other session holds one. */
  xmin: XminHolder | null;
  jobsTable: { liveRows: number; deadRows: number; tableBytes: number; indexBytes: number; lastVacuum: string | null; lastAutovacuum: string | null };
  /** pg_notification_queue_usage(), 0..1. */
  notifyQueueUsage: number;
  /** Client connections in use now, max_connections, and those whose application_name starts with "sluice". */
  connections: { used: number; max: number; bySluice: number };
  /** Human lines, one per threshold passed. */
  warnings: string[];
}

/** config `health.*`; 0 turns a check off. */
export interface HealthThresholds {
  xminAgeWarnMs: number;
  deadRowsWarn: number;
  notifyQueueWarn: number;
}

/** Which signal a warning is about (metrics and the worker's log key on it). */
export type HealthSignal = 'xmin' | 'dead_rows' | 'notify_queue';

export interface HealthWarning {
  signal: HealthSignal;
  message: string;
}

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);

export async function readHealth(db: Queryable, schema: string, thresholds: HealthThresholds): Promise<DatabaseHealth> {
  const q = loadQueries(schema);
  const holder = (await q.health_xmin.run(db, {})).rows[0];
  const table = (await q.health_jobs_table.run(db, {})).rows[0]!;
  const server = (await q.health_server.run(db, {})).rows[0]!;
  const health: DatabaseHealth = {
    xmin: holder
      ? { ageMs: Math.round(holder.age_ms ?? 0), pid: holder.pid, applicationName: holder.application_name, state: holder.state, since: iso(holder.since) }
      : null,
    jobsTable: {
      liveRows: table.live_rows,
      deadRows: table.dead_rows,
      tableBytes: table.table_bytes,
      indexBytes: table.index_bytes,
      lastVacuum: iso(table.last_vacuum),
      lastAutovacuum: iso(table.last_autovacuum),
    },
    notifyQueueUsage: server.notify_queue_usage,
    connections: { used: server.used, max: server.max_connections, bySluice: server.by_sluice },
    warnings: [],
  };
  health.warnings = healthWarnings(health, thresholds).map((w) => w.message);
  return health;
}

/** The thresholds `health` passes, each with a line that names what to look at. */
export function healthWarnings(health: Omit<DatabaseHealth, 'warnings'>, t: HealthThresholds): HealthWarning[] {
  const out: HealthWarning[] = [];
  const x = health.xmin;
  if (t.xminAgeWarnMs > 0 && x && x.ageMs >= t.xminAgeWarnMs) {
    out.push({ signal: 'xmin', message: `xmin held ${formatDuration(x.ageMs)} by ${describeHolder(x)}: vacuum cannot remove the jobs table's dead rows` });
  }
  const j = health.jobsTable;
  if (t.deadRowsWarn > 0 && j.deadRows >= t.deadRowsWarn) {
    out.push({
      signal: 'dead_rows',
      message: `jobs table holds ${j.deadRows} dead row versions (warn at ${t.deadRowsWarn}); last vacuum ${j.lastVacuum ?? 'never'}, last autovacuum ${j.lastAutovacuum ?? 'never'}`,
    });
  }
  if (t.notifyQueueWarn > 0 && health.notifyQueueUsage >= t.notifyQueueWarn) {
    out.push({
      signal: 'notify_queue',
      message:
        `notification queue ${percent(health.notifyQueueUsage)} full (warn at ${percent(t.notifyQueueWarn)}): a session that LISTENs ` +
        'is in a long transaction; when it is full, every commit that notifies fails',
    });
  }
  return out;
}

/** `pid 123 (psql, idle in transaction)` or `prepared transaction 'gid'`. */
export function describeHolder(x: XminHolder): string {
  if (x.pid === null) return x.state ?? 'a prepared transaction';
  return `pid ${x.pid} (${x.applicationName || 'no application_name'}, ${x.state ?? 'state not visible'})`;
}

function percent(ratio: number): string {
  return `${Math.round(ratio * 1000) / 10}%`;
}

/** 850 ms, 42 s, 12 min, 3 h 5 min. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min`;
  const h = Math.floor(min / 60);
  return min % 60 ? `${h} h ${min % 60} min` : `${h} h`;
}
