// Setting a database up: `sluice migrate` (the schema) and `sluice roles` (least-privilege roles).
import type { Command } from 'commander';
import { migrate } from '../../db/migrate.js';
import { applyRoles, DEFAULT_PRODUCER_STATEMENT_TIMEOUT_MS } from '../../db/roles.js';
import { common, intArg, loadCliConfig, withDatabase, type CommonOptions } from '../context.js';
import { print, printJson } from '../output.js';

export function register(program: Command): void {
  common(program.command('migrate').description('apply pending schema migrations')).action((opts: CommonOptions) => cmdMigrate(opts));
  common(
    program
      .command('roles')
      .description('create or update the <schema>_producer and <schema>_worker roles, and grant them to login roles')
      .option('--producer <login...>', 'login roles that enqueue (granted <schema>_producer)')
      .option('--worker <login...>', 'login roles that run workers (granted <schema>_worker)')
      .option(
        '--producer-statement-timeout <ms>',
        `statement_timeout set on each --producer login, 0 leaves it alone (default ${DEFAULT_PRODUCER_STATEMENT_TIMEOUT_MS})`,
        intArg('--producer-statement-timeout', 0),
      ),
  ).action((opts: RolesOptions) => cmdRoles(opts));
}

interface RolesOptions extends CommonOptions {
  producer?: string[];
  worker?: string[];
  producerStatementTimeout?: number;
}

async function cmdRoles(opts: RolesOptions): Promise<void> {
  const config = loadCliConfig(opts);
  const timeout = opts.producerStatementTimeout ?? DEFAULT_PRODUCER_STATEMENT_TIMEOUT_MS;
  const applied = await withDatabase(config, (pool, schema) =>
    applyRoles(pool, schema, { producers: opts.producer, workers: opts.worker, producerStatementTimeoutMs: timeout }),
  );
  if (opts.json) return printJson({ ...applied, producerStatementTimeoutMs: applied.producers.length ? timeout : null });
  print(`roles ${applied.producer} and ${applied.worker} are up to date`);
  for (const login of applied.producers) print(`  ${login}: granted ${applied.producer}${timeout ? `, statement_timeout ${timeout} ms` : ''}`);
  for (const login of applied.workers) print(`  ${login}: granted ${applied.worker}`);
}

async function cmdMigrate(opts: CommonOptions): Promise<void> {
  const config = loadCliConfig(opts);
  const result = await withDatabase(config, (pool, schema) => migrate(pool, schema));
  if (opts.json) return printJson({ schema: config.database.schema, ...result });
  print(
    result.applied.length
      ? `applied migration${result.applied.length > 1 ? 's' : ''} ${result.applied.join(', ')}: schema "${config.database.schema}" is at version ${result.version}`
      : `schema "${config.database.schema}" is up to date (version ${result.version})`,
  );
}
