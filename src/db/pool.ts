// The one bounded pool. Every borrow goes through withClient, which returns the client in a
// finally: destroyed when it broke, returned otherwise. Nothing else calls pool.connect().
// With a multi-host URL (or target_session_attrs=read-write) every new connection goes to the
// host the PrimaryLocator names and is kept only on a writable primary; a borrow tries the hosts
// in order, with back-off between passes, until one is found or connectionTimeoutMs runs out.
// Behind a transaction pooler (database.pooler=transaction) connections carry no session state:
// no startup settings, and a transaction's time limits are SET LOCAL.
import pg from 'pg';
import type { SluiceConfig } from '../config/schema.js';
import type { Logger } from '../observe/logger.js';
import { sleep, TIMED_OUT, withTimeout } from '../util/time.js';
import { errorSummary, isConnectionBroken, isFailoverError, markConnectionBroken } from './errors.js';
import { PrimaryLocator } from './primary.js';
import { locatedTarget } from './target.js';

export interface PoolOptions {
  url: string;
  max: number;
  connectionTimeoutMs: number;
  statementTimeoutMs: number;
  idleInTransactionTimeoutMs: number;
  /** application_name, so operators can count sluice connections in pg_stat_activity. */
  applicationName: string;
  /** `transaction`: a transaction pooler (PgBouncer) sits in front: no session state at all. */
  pooler: SluiceConfig['database']['pooler'];
}

export function poolOptions(config: SluiceConfig, applicationName = 'sluice'): PoolOptions {
  return {
    url: config.database.url,
    max: config.database.poolSize,
    connectionTimeoutMs: config.database.connectionTimeoutMs,
    statementTimeoutMs: config.database.statementTimeoutMs,
    idleInTransactionTimeoutMs: config.database.idleInTransactionTimeoutMs,
    applicationName,
    pooler: config.database.pooler,
  };
}

/**
 * Startup options that make the server probe an idle connection after 60 s and drop it after
 * three unanswered probes 10 s apart. On a half-open link (the client gone without a FIN:
 * a dropped NAT entry, a vanished pod) the server would otherwise keep the backend, and its
 * connection slot, until the kernel's default keepalive gives up, over two hours later. An
 * `options` parameter in the database URL replaces these.
 */
export const SERVER_KEEPALIVE_OPTIONS = '-c tcp_keepalives_idle=60 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3';

/** What withClient and transaction need to know about a pool sluice made. */
interface PoolTraits {
  locator: PrimaryLocator | undefined;
  /** The statement that opens a transaction (with SET LOCAL time limits behind a transaction pooler). */
  begin: string;
  connectionTimeoutMs: number;
}

const traits = new WeakMap<pg.Pool, PoolTraits>();

/** Where the pool's connections go: undefined for a plain single-host URL. */
export function primaryLocatorOf(pool: pg.Pool): PrimaryLocator | undefined {
  return traits.get(pool)?.locator;
}

/** A client of a located pool: which host it went to, and in which generation of the primary. */
interface LocatedClient {
  sluiceHost?: number;
  sluiceGeneration?: number;
}

export function createPool(opts: PoolOptions, log: Logger): pg.Pool {
  const target = locatedTarget(opts.url);
  const locator = target && new PrimaryLocator(target, { log });
  const pooled = opts.pooler === 'transaction';
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.max,
    connectionTimeoutMillis: opts.connectionTimeoutMs,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    application_name: opts.applicationName,
    // the server cancels at statement_timeout; past that a silent link is dead: drop it
    query_timeout: opts.statementTimeoutMs ? opts.statementTimeoutMs + 5000 : undefined,
    // startup settings stay on the server connection a pooler hands to other clients (and 1.18
    // refuses the client unless told to ignore them): behind one, time limits are SET LOCAL
    ...(pooled
      ? {}
      : {
          options: SERVER_KEEPALIVE_OPTIONS,
          statement_timeout: opts.statementTimeoutMs || undefined,
          idle_in_transaction_session_timeout: opts.idleInTransactionTimeoutMs || undefined,
        }),
    ...(locator ? { Client: primaryClient(locator) } : {}),
  });
  // Without these listeners pg crashes the process when a backend is killed.
  pool.on('error', (err, client) => {
    if (locator && isFailoverError(err)) locator.suspect((client as LocatedClient).sluiceHost ?? -1);
    log.warn({ err: errorSummary(err) }, 'idle database connection failed; it was dropped');
  });
  pool.on('connect', (client) => {
    client.on('error', (err) => log.warn({ err: errorSummary(err) }, 'database connection failed'));
  });
  const limits = [
    opts.statementTimeoutMs ? `SET LOCAL statement_timeout = ${Math.round(opts.statementTimeoutMs)}` : '',
    opts.idleInTransactionTimeoutMs ? `SET LOCAL idle_in_transaction_session_timeout = ${Math.round(opts.idleInTransactionTimeoutMs)}` : '',
  ].filter(Boolean);
  traits.set(pool, { locator, begin: pooled ? ['BEGIN', ...limits].join('; ') : 'BEGIN', connectionTimeoutMs: opts.connectionTimeoutMs });
  if (locator) routeQueriesThroughBorrow(pool);
  return pool;
}

/**
 * pool.query (handlers' ctx.db.query, addJob on worker.db) borrows through withClient too, so it
 * also waits for a primary and reports what a failed query says about it. The callback form is
 * left to node-postgres.
 */
function routeQueriesThroughBorrow(pool: pg.Pool): void {
  const original = pool.query.bind(pool) as (...args: unknown[]) => unknown;
  pool.query = ((...args: unknown[]) => {
    if (typeof args[args.length - 1] === 'function') return original(...args);
    return withClient(pool, (c) => (c.query as (...a: unknown[]) => Promise<unknown>)(...args));
  }) as typeof pool.query;
}

/** Thrown by a connection that reached a server in recovery or read-only. */
export class NotPrimaryError extends Error {
  readonly code = 'sluice_not_primary';
}

/**
 * node-postgres's Client, sent to the host the locator names; with requirePrimary it checks, once
 * connected, that the server takes writes, and otherwise closes and fails. Every outcome is
 * reported to the locator.
 */
function primaryClient(locator: PrimaryLocator): typeof pg.Client {
  const { target } = locator;
  return class PrimaryClient extends pg.Client implements LocatedClient {
    readonly sluiceHost: number;
    readonly sluiceGeneration: number;
    private readonly attempt: number;

    constructor(config?: string | pg.ClientConfig) {
      const host = locator.candidate();
      super({ ...(typeof config === 'object' ? config : {}), connectionString: target.urlFor(host) });
      this.sluiceHost = host;
      this.sluiceGeneration = locator.generation;
      this.attempt = locator.beginAttempt();
    }

    override connect(): Promise<pg.Client>;
    override connect(callback: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): void;
    override connect(callback?: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): Promise<pg.Client> | void {
      const attempt = this.connectToPrimary().then(() => this);
      if (!callback) return attempt;
      const done = callback as (err: Error | null, c?: pg.Client) => void;
      attempt.then((c) => done(null, c), (err: Error) => done(err));
    }

    private async connectToPrimary(): Promise<void> {
      try {
        await super.connect();
        if (target.requirePrimary) {
          const r = await super.query<{ recovery: boolean; read_only: boolean }>(
            "SELECT pg_is_in_recovery() AS recovery, current_setting('transaction_read_only') = 'on' AS read_only",
          );
          const { recovery, read_only } = r.rows[0]!;
          if (recovery || read_only) {
            await this.end().catch(() => undefined);
            throw new NotPrimaryError(`${target.label(this.sluiceHost)} is not a writable primary (${recovery ? 'in recovery' : 'read-only'})`);
          }
        }
      } catch (err) {
        locator.failed(this.sluiceHost, err, this.attempt);
        throw err;
      }
      locator.confirmed(this.sluiceHost);
    }
  };
}

/**
 * A client from the pool. On a located pool: a connect that failed or found no primary is tried
 * again at the next host (after the locator's back-off once every host failed), and a client made
 * before the primary was last suspected is destroyed rather than used; until connectionTimeoutMs.
 */
async function borrow(pool: pg.Pool): Promise<pg.PoolClient> {
  const t = traits.get(pool);
  const locator = t?.locator;
  if (!locator) return pool.connect();
  const deadline = Date.now() + t.connectionTimeoutMs;
  for (;;) {
    const wait = locator.waitMs();
    if (wait > 0) {
      if (Date.now() + wait > deadline) throw noPrimary(locator, t.connectionTimeoutMs);
      await sleep(wait);
    }
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      if (Date.now() >= deadline) throw err;
      continue;
    }
    if ((client as LocatedClient).sluiceGeneration === locator.generation) return client;
    client.release(new Error('made before the primary was last suspected'));
  }
}

function noPrimary(locator: PrimaryLocator, timeoutMs: number): Error {
  const hosts = locator.target.hosts.map((_, i) => locator.target.label(i)).join(', ');
  return Object.assign(new Error(`no writable primary among ${hosts} within ${timeoutMs} ms${locator.lastError ? ` (last: ${locator.lastError})` : ''}`), {
    code: 'sluice_no_primary',
  });
}

/** Borrows a client for one step and always gives it back; a client that failed is destroyed. */
export async function withClient<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await borrow(pool);
  let broken: Error | undefined;
  try {
    return await fn(client);
  } catch (err) {
    if (isConnectionBroken(err)) broken = err as Error;
    if (isFailoverError(err)) traits.get(pool)?.locator?.suspect((client as LocatedClient).sluiceHost ?? -1);
    throw err;
  } finally {
    client.release(broken);
  }
}

/** Runs fn in a transaction on one borrowed client; commits when fn resolves, rolls back when it throws. */
export async function transaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const begin = traits.get(pool)?.begin ?? 'BEGIN';
  return withClient(pool, async (client) => {
    await client.query(begin);
    let result: T;
    try {
      result = await fn(client);
    } catch (err) {
      try {
        await client.query('ROLLBACK');
      } catch (rollbackErr) {
        // a client that cannot roll back still holds the transaction: it must not go back to the pool
        throw markConnectionBroken(err as Error, rollbackErr as Error);
      }
      throw err;
    }
    await client.query('COMMIT');
    return result;
  });
}

/** Ends the pool, bounded: pool.end() waits forever while a client is checked out. */
export async function endPool(pool: pg.Pool, timeoutMs: number): Promise<boolean> {
  return (await withTimeout(pool.end().then(() => true, () => true), timeoutMs)) !== TIMED_OUT;
}
