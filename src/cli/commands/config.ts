// `sluice config check`: validate the configuration and print it with secrets redacted.
import type { Command } from 'commander';
import YAML from 'yaml';
import { redactedConfig } from '../../config/load.js';
import { common, EXIT_CODES, loadCliConfig, type CommonOptions } from '../context.js';
import { printJson } from '../output.js';

export function register(program: Command): void {
  const config = program.command('config').description('configuration tools');
  config.addHelpText('after', EXIT_CODES);
  common(
    config.command('check').description('validate the configuration and print it with secrets redacted (exit 2 when invalid)'),
  ).action((opts: CommonOptions) => cmdConfigCheck(opts));
}

async function cmdConfigCheck(opts: CommonOptions): Promise<void> {
  const config = loadCliConfig(opts);
  const shown = redactedConfig(config);
  if (opts.json) return printJson(shown);
  const source = opts.config ?? process.env.SLUICE_CONFIG;
  process.stderr.write(`configuration is valid${source ? ` (${source} + environment)` : ' (defaults + environment)'}\n`);
  process.stdout.write(YAML.stringify(shown));
}
