// `sluice migrate`: apply pending schema migrations.
import type { Command } from 'commander';
import { migrate } from '../../db/migrate.js';
import { common, loadCliConfig, withDatabase, type CommonOptions } from '../context.js';
import { print, printJson } from '../output.js';

export function register(program: Command): void {
  common(program.command('migrate').description('apply pending schema migrations')).action((opts: CommonOptions) => cmdMigrate(opts));
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
