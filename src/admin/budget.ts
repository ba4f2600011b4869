// The connection budget: what the server allows, what sluice workers may hold, what everybody else
// holds, and whether one more worker fits. `sluice budget` and `sluice status` print it; the
// worker checks it at startup (warning, or refusing when told to be strict).
import type pg from 'pg';
import { withClient } from '../db/pool.js';
import { loadQueries, type WorkerRow } from '../db/queries.js';
import { isMissingSchema } from '../db/errors.js';

export interface WorkerBudget {
  id: string;
  host: string;
  pid: number;
  poolSize: number;
  /** What the worker may hold at most: its pool plus the listener connection. */
  budget: number;
  /**
   * Sessions open now that are this worker's (best effort: exact when the sessions carry the
   * worker id in application_name (`sluice <id>`), or when only one worker is registered; null when unknown).
   */
  connected: number | null;
  heartbeatAgeSeconds: number;
}

export interface Budget {
  /** max_connections. */
  maxConnections: number;
  /** superuser_reserved_connections + reserved_connections (PostgreSQL 16+). */
  reservedConnections: number;
  /** What ordinary roles may open: maxConnections - reservedConnections. */
  usableConnections: number;
  /** Client sessions open now (all roles, this one included). */
  inUse: number;
  /** Live workers (heartbeat within worker.rescueAfterMs). */
  sluice: WorkerBudget[];
  /** Sum of the live workers' budgets. */
  sluiceBudget: number;
  /** Sessions whose application_name starts with "sluice" (workers, listeners, other CLI commands; not the asking one). */
  sluiceConnected: number;
  /** sluice sessions not attributed to a live worker (CLI commands, workers presumed dead, untagged). */
  sluiceUnattributed: number;
  /** Sessions of everybody else (application_name not starting with "sluice"). */
  others: number;
  /** The asking `sluice-cli` session itself (counted in inUse only): 1 from the CLI, else 0. */
  asking: number;
  /** Slots free now for ordinary roles: usableConnections - inUse. */
  available: number;
  /** False when sluice is not installed in the schema (no workers can be listed). */
  schemaInstalled: boolean;
}

export interface ReadBudgetOptions {
  /** Silence after which a worker is presumed dead and left out (worker.rescueAfterMs). */
  rescueAfterMs?: number;
}

interface SessionRow {
  application_name: string;
  sessions: number;
}

// `sluice <worker id>` / `sluice-listener <worker id>` (a colon is accepted too)
const TAGGED = /^sluice(?:-listener)?[ :](.+)$/;

export async function readBudget(pool: pg.Pool, schema: string, opts: ReadBudgetOptions = {}): Promise<Budget> {
  const rescueAfterMs = opts.rescueAfterMs ?? 15_000;
  return withClient(pool, async (client) => {
    const q = loadQueries(schema);
    const server = (await q.budget.run(client, {})).rows[0]!;
    const sessions = (await q.budget_sessions.run(client, {})).rows;
    let workers: WorkerRow[] = [];
    let schemaInstalled = true;
    try {
      workers = (await q.workers.run(client, { rescueAfterMs })).rows;
    } catch (err) {
      if (!isMissingSchema(err)) throw err;
      schemaInstalled = false;
    }
    const live = workers.filter((w) => w.alive);
    const connected = attribute(live.map((w) => w.id), sessions);
    const sluice: WorkerBudget[] = live.map((w) => ({
      id: w.id,
      host: w.host,
      pid: w.pid,
      poolSize: w.pool_size,
      budget: w.pool_size + 1,
      connected: connected.get(w.id) ?? null,
      heartbeatAgeSeconds: w.heartbeat_age_seconds,
    }));
    const reservedConnections = server.superuser_reserved + server.reserved;
    const usableConnections = server.max_connections - reservedConnections;
    const attributed = sluice.reduce((n, w) => n + (w.connected ?? 0), 0);
    return {
      maxConnections: server.max_connections,
      reservedConnections,
      usableConnections,
      inUse: server.in_use,
      sluice,
      sluiceBudget: sluice.reduce((n, w) => n + w.budget, 0),
      sluiceConnected: server.sluice,
      sluiceUnattributed: Math.max(0, server.sluice - attributed),
      others: server.others,
      asking: server.in_use - server.sluice - server.others,
      available: usableConnections - server.in_use,
      schemaInstalled,
    };
  });
}

/**
 * Sessions per worker id. A session tagged `sluice <id>` or `sluice-listener <id>` (the id may be
 * cut short at 63 characters) is its worker's; untagged `sluice` and `sluice-listener` sessions
 * are attributed only when a single worker is live. Other workers stay unknown.
 */
function attribute(ids: string[], sessions: SessionRow[]): Map<string, number> {
  const out = new Map<string, number>();
  let untagged = 0;
  let anyTagged = false;
  for (const s of sessions) {
    const m = TAGGED.exec(s.application_name);
    if (m) {
      const tag = m[1]!;
      const truncated = s.application_name.length >= 63;
      const id = ids.find((i) => i === tag || (truncated && i.startsWith(tag)));
      if (id) {
        out.set(id, (out.get(id) ?? 0) + s.sessions);
        anyTagged = true;
      }
    } else if (s.application_name === 'sluice' || s.application_name === 'sluice-listener') {
      untagged += s.sessions;
    }
  }
  if (ids.length === 1 && !anyTagged) out.set(ids[0]!, untagged);
  else if (anyTagged) for (const id of ids) if (!out.has(id)) out.set(id, 0);
  return out;
}

export interface BudgetCheck {
  fits: boolean;
  /** What the new worker needs: poolSize + 1. */
  needed: number;
  /** What is left for it once other clients and the other live workers' budgets are set aside. */
  headroom: number;
  message: string;
}

export interface CheckBudgetOptions {
  /** The checking worker's own id, when it is already registered (its budget is not counted twice). */
  ownId?: string;
}

/**
 * Whether a worker with `ownPoolSize` fits: its poolSize + 1 connections must fit in what ordinary
 * roles may open, minus the sessions of other clients now and the full budgets of the live
 * workers (they may grow to their budget at any time).
 */
export function checkBudget(budget: Budget, ownPoolSize: number, opts: CheckBudgetOptions = {}): BudgetCheck {
  const needed = ownPoolSize + 1;
  const workers = budget.sluice.filter((w) => w.id !== opts.ownId);
  const claimed = workers.reduce((n, w) => n + w.budget, 0);
  const headroom = budget.usableConnections - budget.others - claimed;
  const fits = needed <= headroom;
  const sum =
    `max_connections ${budget.maxConnections} - reserved ${budget.reservedConnections}` +
    ` - other clients ${budget.others} - ${workers.length} other sluice worker${workers.length === 1 ? '' : 's'} (budget ${claimed})` +
    ` = ${headroom}`;
  const message = fits
    ? `connection budget fits: this worker needs ${needed} connections (database.poolSize ${ownPoolSize} + 1 listener); ${sum} available`
    : `connection budget exceeded: this worker needs ${needed} connections (database.poolSize ${ownPoolSize} + 1 listener) ` +
      `but only ${Math.max(0, headroom)} are left (${sum}); lower database.poolSize, run fewer workers, or raise max_connections`;
  return { fits, needed, headroom, message };
}

