// Least-privilege roles (sql/roles/): <schema>_producer may only enqueue and read its own jobs;
// <schema>_worker may run them. applyRoles creates or updates both, and grants them to login
// roles. Role settings are not inherited by members, so the producer's statement_timeout is set
// on each producer login it is given.
import type pg from 'pg';
import { SluiceError } from '../errors.js';
import { transaction } from './pool.js';
import { loadQueries } from './queries.js';

export interface RoleOptions {
  /** Login roles that enqueue: granted <schema>_producer. */
  producers?: string[];
  /** Login roles that run workers: granted <schema>_worker. */
  workers?: string[];
  /**
   * statement_timeout set on each producer login (ALTER ROLE ... SET), so that no enqueue call
   * can run unbounded; 0 leaves the login's setting alone. Default 30 s.
   */
  producerStatementTimeoutMs?: number;
}

export interface AppliedRoles {
  producer: string;
  worker: string;
  producers: string[];
  workers: string[];
}

export const DEFAULT_PRODUCER_STATEMENT_TIMEOUT_MS = 30_000;

const quoteIdent = (name: string) => `"${name.replaceAll('"', '""')}"`;

export async function applyRoles(pool: pg.Pool, schema: string, opts: RoleOptions = {}): Promise<AppliedRoles> {
  const q = loadQueries(schema);
  const producer = `${schema}_producer`;
  const worker = `${schema}_worker`;
  const producers = opts.producers ?? [];
  const workers = opts.workers ?? [];
  const timeoutMs = opts.producerStatementTimeoutMs ?? DEFAULT_PRODUCER_STATEMENT_TIMEOUT_MS;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 0) {
    throw new SluiceError('usage', `the producer statement timeout must be an integer number of ms, 0 or more, got ${timeoutMs}`);
  }
  await transaction(pool, async (c) => {
    for (const login of [...producers, ...workers]) {
      const role = (await q.roles_login.run(c, { name: login })).rows[0];
      if (!role) throw new SluiceError('usage', `role "${login}" does not exist: create it first (CREATE ROLE ${quoteIdent(login)} LOGIN PASSWORD '...')`);
      if (!role.rolcanlogin) throw new SluiceError('usage', `role "${login}" cannot log in: grant the sluice roles to the login roles your programs connect as`);
    }
    await q.roles_create.run(c, {});
    await q.roles_grants.run(c, {});
    for (const login of producers) {
      await c.query(`GRANT ${quoteIdent(producer)} TO ${quoteIdent(login)}`);
      if (timeoutMs > 0) await c.query(`ALTER ROLE ${quoteIdent(login)} SET statement_timeout = ${timeoutMs}`);
    }
    for (const login of workers) await c.query(`GRANT ${quoteIdent(worker)} TO ${quoteIdent(login)}`);
  });
  return { producer, worker, producers, workers };
}
