// The `sluice` command line: parse, call library functions, print. One file per command group
// in commands/; nothing runs on import (bin/sluice.js calls run()).
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { EXIT_CODES, reportError } from './context.js';
import * as config from './commands/config.js';
import * as dashboard from './commands/dashboard.js';
import * as jobs from './commands/jobs.js';
import * as queues from './commands/queues.js';
import * as setup from './commands/setup.js';
import * as start from './commands/start.js';
import * as status from './commands/status.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export function buildProgram(): Command {
  const program = new Command('sluice')
    .description('A PostgreSQL job worker daemon that never runs the database out of connections.')
    .version(VERSION, '-V, --version')
    .exitOverride()
    .configureOutput({
      outputError: (str, write) => write(`sluice: ${str.replace(/^error: /, '')}`),
    })
    .showSuggestionAfterError(true);
  program.addHelpText('after', EXIT_CODES);
  for (const group of [start, setup, jobs, queues, status, dashboard, config]) group.register(program);
  return program;
}

/** Runs one command; resolves to its exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander has printed the help, the version or its error line already
      return ['commander.helpDisplayed', 'commander.version', 'commander.executeSubCommandAsync'].includes(err.code) ? 0 : 2;
    }
    return reportError(err);
  }
}

/** The program's entry: runs the command in process.argv and sets the exit code. */
export async function run(argv: string[] = process.argv): Promise<void> {
  // `sluice status | head -1`: a reader that went away ends the command quietly, as git does
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
  process.exitCode = await main(argv);
}
