// What every command shares: its configuration, its one database connection, and the errors
// that map to exit codes. Errors are one line on stderr, `sluice: ...`, without stack traces or
// passwords; exit code 2 for what the user gave (arguments, configuration, a job), 1 for the rest.
import { Command, InvalidArgumentError } from 'commander';
import type pg from 'pg';
import { loadConfig } from '../config/load.js';
import type { ConfigInput, SluiceConfig } from '../config/schema.js';
import { errorSummary, isMissingSchema } from '../db/errors.js';
import { createPool, endPool, poolOptions, withClient } from '../db/pool.js';
import { findLocalDatabase, noDatabaseMessage } from '../embedded/local-database.js';
import { errorCode, SluiceError, type ErrorCode } from '../errors.js';
import { silentLogger } from '../observe/logger.js';
import { redact } from '../util/redact.js';

export const EXIT_CODES = `
Exit codes:
  0  success
  1  operational failure (database unreachable, job not found, job in the wrong state)
  2  usage or validation error (unknown flag, bad JSON payload, invalid configuration)

Configuration: --config FILE (YAML or JSON), else $SLUICE_CONFIG; environment variables override
the file and flags override both. With no database.url (DATABASE_URL), \`sluice start\` runs an
embedded PostgreSQL in database.embeddedDir and the other commands find it there.`;

export interface CommonOptions {
  config?: string;
  json?: boolean;
}

export const usageError = (message: string) => new SluiceError('usage', message);
export const failure = (message: string) => new SluiceError('unavailable', message);

const USAGE_CODES: ReadonlySet<ErrorCode | undefined> = new Set(['usage', 'config_invalid', 'invalid_job']);

/** Prints the error as one line and returns the exit code it maps to. */
export function reportError(err: unknown): number {
  const code = errorCode(err);
  const message = code === 'config_invalid' ? oneLine((err as Error).message) : errorSummary(err).message;
  process.stderr.write(`sluice: ${message}\n`);
  return USAGE_CODES.has(code) ? 2 : 1;
}

/** A multi-line ConfigError as one line: "invalid configuration: worker.concurrency: must be ...; ..." */
export function oneLine(message: string): string {
  const [head, ...items] = message.split('\n').map((l) => l.trim()).filter(Boolean);
  if (!items.length) return head ?? message;
  return `${head!.replace(/:$/, '')}: ${items.map((i) => i.replace(/^- /, '')).join('; ')}`;
}

/** --config and, for commands that print data, --json; and the exit codes in --help. */
export function common(cmd: Command, json = true): Command {
  cmd.option('-c, --config <file>', 'config file (YAML or JSON); default $SLUICE_CONFIG');
  if (json) cmd.option('--json', 'print JSON for machines instead of a table');
  cmd.addHelpText('after', EXIT_CODES);
  return cmd;
}

export function intArg(name: string, min: number) {
  return (value: string): number => {
    if (!/^-?\d+$/.test(value.trim()) || Number(value) < min || !Number.isSafeInteger(Number(value))) {
      throw new InvalidArgumentError(`${name} must be an integer of at least ${min}.`);
    }
    return Number(value);
  };
}

/** The configuration, with `flags` as overrides (their error lines name `flagNames[key]`). */
export function loadCliConfig(opts: CommonOptions, flags: ConfigInput = {}, flagNames: Record<string, string> = {}): SluiceConfig {
  return loadConfig({ file: opts.config, overrides: flags, overrideSource: (key) => flagNames[key] ?? key });
}

/** The database URL: configured, or the embedded server running in database.embeddedDir. */
export function databaseUrl(config: SluiceConfig): string {
  if (config.database.url) return config.database.url;
  const local = findLocalDatabase(config.database.embeddedDir);
  if (!local) throw failure(noDatabaseMessage(config.database.embeddedDir));
  return local.url;
}

/** Runs fn with a one-connection pool (application_name sluice-cli); translates database errors. */
export async function withDatabase<T>(config: SluiceConfig, fn: (pool: pg.Pool, schema: string) => Promise<T>): Promise<T> {
  const url = databaseUrl(config);
  const schema = config.database.schema;
  const pool = createPool({ ...poolOptions({ ...config, database: { ...config.database, url } }, 'sluice-cli'), max: 1 }, silentLogger());
  try {
    try {
      await withClient(pool, async () => undefined);
    } catch (err) {
      throw failure(`cannot connect to the database at ${redact(url)}: ${errorSummary(err).message}`);
    }
    try {
      return await fn(pool, schema);
    } catch (err) {
      if (isMissingSchema(err)) {
        throw failure(`sluice is not installed in schema "${schema}" of this database (${errorSummary(err).message}): run "sluice migrate"`);
      }
      throw err;
    }
  } finally {
    await endPool(pool, 2000);
  }
}
