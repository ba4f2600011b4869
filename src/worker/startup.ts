// What a worker checks before it takes jobs: the schema is at this code's version (or migrated,
// when asked), the worker is registered, and its connections fit in the server's budget. With
// database.retryOnStartup a database that is not there yet (or not migrated yet) is waited for.
import type pg from 'pg';
import type { SluiceConfig } from '../config/schema.js';
import { checkBudget, readBudget } from '../admin/budget.js';
import { errorSummary } from '../db/errors.js';
import { currentVersion, expectedVersion, migrate } from '../db/migrate.js';
import { locatedTarget } from '../db/target.js';
import type { Queries } from '../db/queries.js';
import { SluiceError } from '../errors.js';
import type { Logger } from '../observe/logger.js';
import { backoffMs } from '../util/backoff.js';
import { sleep } from '../util/time.js';
import { registerWorker, type WorkerIdentity } from './lease.js';

const STARTUP_RETRY = { baseMs: 500, maxMs: 30_000, jitter: 'full' } as const;

export interface StartupOptions {
  pool: pg.Pool;
  queries: Queries;
  config: SluiceConfig;
  identity: WorkerIdentity;
  /** Apply migrations instead of requiring the schema to be at this version. */
  migrate: boolean;
  log: Logger;
  /** Aborted by stop(): the wait between attempts ends at once. */
  signal: AbortSignal;
}

/** Schema check (or migration) and registration; with database.retryOnStartup, retried until they succeed. */
export async function prepareDatabase(opts: StartupOptions): Promise<void> {
  const { pool, queries, config, identity, log, signal } = opts;
  for (let attempt = 1; ; attempt++) {
    try {
      await checkSchema(opts);
      await registerWorker(pool, queries, identity);
      return;
    } catch (err) {
      if (!config.database.retryOnStartup || signal.aborted) throw err;
      const delay = backoffMs(attempt, STARTUP_RETRY);
      log.warn(
        { err: errorSummary(err), database: describeDatabase(config.database.url), retryInMs: Math.round(delay) },
        'cannot start yet: database unreachable or not ready; retrying',
      );
      await sleep(delay, signal);
    }
  }
}

/** host:port/database of a URL (every host of a multi-host one), for log lines (never its credentials). */
function describeDatabase(url: string): string {
  try {
    const target = locatedTarget(url);
    if (target) return `${target.hosts.map((_, i) => target.label(i)).join(',')}${new URL(target.urlFor(0)).pathname}`;
    const u = new URL(url);
    return `${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return 'the configured database';
  }
}

async function checkSchema({ pool, config, migrate: apply, log }: StartupOptions): Promise<void> {
  const schema = config.database.schema;
  if (apply) {
    const r = await migrate(pool, schema);
    if (r.applied.length) log.info({ applied: r.applied, schema }, 'migrations applied');
    return;
  }
  const have = await currentVersion(pool, schema);
  const want = expectedVersion(schema);
  if (have < want) {
    throw new SluiceError('schema_version', `schema "${schema}" is at version ${have}, this sluice needs ${want}: run "sluice migrate" first`);
  }
}

/** Warns (or, with database.strictBudget, refuses to start) when poolSize + 1 does not fit. */
export async function checkConnectionBudget({ pool, config, identity, log }: Omit<StartupOptions, 'signal' | 'migrate'>): Promise<void> {
  const budget = await readBudget(pool, config.database.schema, { rescueAfterMs: config.worker.rescueAfterMs });
  const check = checkBudget(budget, config.database.poolSize, { ownId: identity.id });
  if (!check.fits && config.database.strictBudget) throw new SluiceError('budget', `${check.message} (database.strictBudget is on)`);
  log[check.fits ? 'info' : 'warn']({ needed: check.needed, headroom: check.headroom }, check.message);
}
