// Applies sql/migrations in order, each recorded in <schema>.migrations. All of it runs in one
// transaction behind an advisory lock, so two processes migrating at once apply each file once.
import type pg from 'pg';
import { assertIdentifier, loadMigrations } from './db/sql.js';
import { transaction, withClient } from './db/pool.js';

export interface MigrateResult {
  applied: number[];
  version: number;
}

/** The schema version this build of sluice expects. */
export function expectedVersion(schema = 'sluice'): number {
  const all = loadMigrations(schema);
  return all.length ? all[all.length - 1]!.version : 0;
}

export async function migrate(pool: pg.Pool, schema: string): Promise<MigrateResult> {
  assertIdentifier(schema);
  const migrations = loadMigrations(schema);
  return transaction(pool, async (client) => {
    await client.query("SELECT pg_advisory_xact_lock(hashtextextended('sluice.migrate.' || $1, 0))", [schema]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
    await client.query(`CREATE TABLE IF NOT EXISTS "${schema}".migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const done = new Set(
      (await client.query<{ version: number }>(`SELECT version FROM "${schema}".migrations`)).rows.map((r) => r.version),
    );
    const applied: number[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      try {
        await client.query(m.sql);
      } catch (err) {
        (err as Error).message = `migration ${m.version}_${m.name} failed: ${(err as Error).message}`;
        throw err;
      }
      await client.query(`INSERT INTO "${schema}".migrations (version, name) VALUES ($1, $2)`, [m.version, m.name]);
      applied.push(m.version);
    }
    const version = Math.max(0, ...done, ...applied);
    if (version > expectedVersion(schema)) {
      throw new Error(`schema ${schema} is at version ${version}, newer than this sluice (${expectedVersion(schema)}): upgrade sluice`);
    }
    return { applied, version };
  });
}

/** The applied version, or 0 when sluice was never migrated in this schema. */
export async function currentVersion(pool: pg.Pool, schema: string): Promise<number> {
  assertIdentifier(schema);
  return withClient(pool, async (client) => {
    const exists = await client.query('SELECT to_regclass($1) AS t', [`"${schema}".migrations`]);
    if (!exists.rows[0].t) return 0;
    const r = await client.query(`SELECT coalesce(max(version), 0) AS v FROM "${schema}".migrations`);
    return Number(r.rows[0].v);
  });
}
