// The one bounded pool. Every borrow goes through withClient, which returns the client in a
// finally: destroyed when it broke, returned otherwise. Nothing else calls pool.connect().
import pg from 'pg';
import type { SluiceConfig } from '../config/schema.js';
import type { Logger } from '../observe/logger.js';
import { TIMED_OUT, withTimeout } from '../util/time.js';
import { errorSummary, isConnectionBroken, markConnectionBroken } from './errors.js';

export interface PoolOptions {
  url: string;
  max: number;
  connectionTimeoutMs: number;
  statementTimeoutMs: number;
  idleInTransactionTimeoutMs: number;
  /** application_name, so operators can count sluice connections in pg_stat_activity. */
  applicationName: string;
}

export function poolOptions(config: SluiceConfig, applicationName = 'sluice'): PoolOptions {
  return {
    url: config.database.url,
    max: config.database.poolSize,
    connectionTimeoutMs: config.database.connectionTimeoutMs,
    statementTimeoutMs: config.database.statementTimeoutMs,
    idleInTransactionTimeoutMs: config.database.idleInTransactionTimeoutMs,
    applicationName,
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

export function createPool(opts: PoolOptions, log: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.max,
    connectionTimeoutMillis: opts.connectionTimeoutMs,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    options: SERVER_KEEPALIVE_OPTIONS,
    application_name: opts.applicationName,
    statement_timeout: opts.statementTimeoutMs || undefined,
    // the server cancels at statement_timeout; past that a silent link is dead: drop it
    query_timeout: opts.statementTimeoutMs ? opts.statementTimeoutMs + 5000 : undefined,
    idle_in_transaction_session_timeout: opts.idleInTransactionTimeoutMs || undefined,
  });
  // Without these listeners pg crashes the process when a backend is killed.
  pool.on('error', (err) => log.warn({ err: errorSummary(err) }, 'idle database connection failed; it was dropped'));
  pool.on('connect', (client) => {
    client.on('error', (err) => log.warn({ err: errorSummary(err) }, 'database connection failed'));
  });
  return pool;
}

/** Borrows a client for one step and always gives it back; a client that failed is destroyed. */
export async function withClient<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    return await fn(client);
  } catch (err) {
    if (isConnectionBroken(err)) broken = err as Error;
    throw err;
  } finally {
    client.release(broken);
  }
}

/** Runs fn in a transaction on one borrowed client; commits when fn resolves, rolls back when it throws. */
export async function transaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, async (client) => {
    await client.query('BEGIN');
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
