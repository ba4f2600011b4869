// Applies sql/migrations in order, each recorded in <schema>.migrations. All of it runs in one
// transaction behind an advisory lock, so two processes migrating at once apply each file once.
import type pg from 'pg';
import { assertIdentifier, loadMigrations } from './sql.js';
import { loadQueries } from './queries.js';
import { transaction, withClient } from './pool.js';

export interface MigrateResult {
  applied: number[];
  version: number;
}

/** The schema version this build of sluice expects. */
export function expectedVersion(schema = 'sluice'): number {
  const all = loadMigrations(schema);
  return all.length ? all[all.length - 1]!.version : 0;
}

export interface MigrateOptions {
  /** Stop after this version (an upgrade in steps; tests of what a later migration changes). */
  toVersion?: number;
}

export async function migrate(pool: pg.Pool, schema: string, opts: MigrateOptions = {}): Promise<MigrateResult> {
  assertIdentifier(schema);
  const migrations = loadMigrations(schema).filter((m) => opts.toVersion === undefined || m.version <= opts.toVersion);
  const q = loadQueries(schema);
  return transaction(pool, async (client) => {
    await q.migrate_lock.run(client, {});
    await q.migrate_prepare.run(client, {});
    const done = new Set((await q.migrate_applied.run(client, {})).rows.map((r) => r.version));
    const applied: number[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      try {
        await client.query(m.sql);
      } catch (err) {
        (err as Error).message = `migration ${m.version}_${m.name} failed: ${(err as Error).message}`;
        throw err;
      }
      await q.migrate_record.run(client, { version: m.version, name: m.name });
      applied.push(m.version);
    }
    // a function a migration added is executable by PUBLIC until the roles' grants say otherwise
    if (applied.length && (await q.roles_exist.run(client, {})).rows[0]!.exist) await q.roles_grants.run(client, {});
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
  const q = loadQueries(schema);
  return withClient(pool, async (client) => {
    if (!(await q.migrate_installed.run(client, {})).rows[0]!.installed) return 0;
    return (await q.migrate_version.run(client, {})).rows[0]!.version;
  });
}
