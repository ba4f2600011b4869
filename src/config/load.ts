// Resolving the configuration: defaults < config file < environment < overrides (command-line
// flags, API callers), key by key; then every check, including those that involve several keys.
// The result is the only thing the rest of sluice reads: nobody else looks at process.env.
import convict from 'convict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { ConfigError } from '../errors.js';
import { redact, REDACTED } from '../util/redact.js';
import { queuesAsList } from './queues.js';
import { configSchema, schemaKeys, type ConfigInput, type SluiceConfig } from './schema.js';

export interface LoadOptions {
  /** Config file (YAML or JSON); defaults to $SLUICE_CONFIG. */
  file?: string;
  /** Values that win over file and environment (command-line flags, API callers). */
  overrides?: ConfigInput;
  /** Where an override came from, for error messages (a flag name, say); default "the config option". */
  overrideSource?: (key: string) => string;
  env?: NodeJS.ProcessEnv;
}

const resolved = new WeakSet<object>();

/** True for a configuration returned by loadConfig (a Worker takes it as it is). */
export function isResolvedConfig(value: unknown): value is SluiceConfig {
  return typeof value === 'object' && value !== null && resolved.has(value);
}

type Conf = { set(name: never, value: never): unknown; load(o: object): unknown; validate(o: object): unknown; getProperties(): unknown };

export function loadConfig(opts: LoadOptions = {}): SluiceConfig {
  const env = opts.env ?? process.env;
  const conf = convict(configSchema as never, { env: {}, args: [] }) as unknown as Conf;
  // where each key's value came from, and the value as it was given there
  const given = new Map<string, { source: string; value: unknown }>();
  const file = opts.file ?? env.SLUICE_CONFIG;
  if (file) {
    const parsed = withQueueList(readConfigFile(file));
    conf.load(parsed);
    for (const [key, value] of leaves(parsed)) given.set(key, { source: `in ${file}`, value });
  }
  for (const [key, spec] of schemaKeys()) {
    const value = spec.env ? env[spec.env] : undefined;
    if (value === undefined) continue;
    conf.set(key as never, value as never);
    given.set(key, { source: `from environment variable ${spec.env}`, value });
  }
  if (opts.overrides) {
    for (const [key, value] of leaves(withQueueList(opts.overrides))) {
      if (value === undefined) continue;
      conf.set(key as never, value as never);
      given.set(key, { source: `from ${opts.overrideSource?.(key) ?? 'the config option'}`, value });
    }
  }
  try {
    conf.validate({ allowed: 'strict' });
  } catch (err) {
    throw new ConfigError(`invalid configuration:\n${describeErrors((err as Error).message, given)}`);
  }
  const config = conf.getProperties() as SluiceConfig;
  checkCombinations(config, given);
  resolved.add(config);
  return config;
}

function readConfigFile(file: string): object {
  if (!existsSync(file)) throw new ConfigError(`config file ${file} does not exist`);
  const ext = path.extname(file).toLowerCase();
  if (!['.yml', '.yaml', '.json'].includes(ext)) throw new ConfigError(`config file ${file} must end in .yaml, .yml or .json`);
  let parsed: unknown;
  try {
    const text = readFileSync(file, 'utf8');
    parsed = ext === '.json' ? JSON.parse(text) : YAML.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${file} cannot be parsed: ${(err as Error).message}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError(`config file ${file} must hold a mapping of sections (database, worker, http, log)`);
  }
  return parsed;
}

/** worker.queues given as a map, as the list convict can hold (it takes a nested object for more keys). */
function withQueueList<T extends object>(input: T): T {
  const worker = (input as { worker?: unknown }).worker;
  if (!worker || typeof worker !== 'object' || !('queues' in worker)) return input;
  return { ...input, worker: { ...worker, queues: queuesAsList((worker as { queues: unknown }).queues) } };
}

/** The leaf values of a nested object as dotted keys; arrays are leaves. */
function leaves(node: object, prefix = ''): [string, unknown][] {
  const out: [string, unknown][] = [];
  for (const [key, value] of Object.entries(node)) {
    const name = `${prefix}${key}`;
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) out.push(...leaves(value, `${name}.`));
    else out.push([name, value]);
  }
  return out;
}

/** convict's lines ("worker.concurrency: must be an integer >= 1: value was -1") with the source of each value. */
function describeErrors(message: string, given: Map<string, { source: string; value: unknown }>): string {
  return message
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const undeclared = /configuration param '([^']+)' not declared in the schema/.exec(line);
      if (undeclared) {
        const where = given.get(undeclared[1]!)?.source;
        return `  - ${undeclared[1]}: unknown key${where ? ` (${where})` : ''} (see config/sluice.example.yaml for the keys)`;
      }
      const key = /^([\w.]+): /.exec(line)?.[1];
      const from = key ? given.get(key) : undefined;
      // the value as it was given (convict shows it after coercion, or not at all)
      const convictValue = /: value was (.*)$/.exec(line)?.[1];
      const got = from ? JSON.stringify(from.value) : convictValue;
      const text = `${line.replace(/: value was .*$/, '').replace(/: got .*$/, '')}${got === undefined ? '' : `: got ${got}`}`;
      return `  - ${redact(text)}${from ? ` (${from.source})` : ''}`;
    })
    .join('\n');
}

/**
 * Values that follow from others, and checks that involve several keys. Only what the user set
 * is refused; each refusal names the keys to change and where their values came from.
 */
function checkCombinations(config: SluiceConfig, given: Map<string, { source: string; value: unknown }>): void {
  const w = config.worker;
  const heartbeat = given.get('worker.heartbeatMs');
  const rescue = given.get('worker.rescueAfterMs');
  // a heartbeat nobody set follows the rescue window: a fifth of it, never above the default
  if (!heartbeat) w.heartbeatMs = Math.max(1, Math.min(w.heartbeatMs, Math.floor(w.rescueAfterMs / 5)));
  if (w.heartbeatMs * 3 > w.rescueAfterMs) {
    const from = (g: { source: string } | undefined) => g?.source ?? 'the default';
    throw new ConfigError(
      `invalid configuration:\n  - worker.heartbeatMs (${w.heartbeatMs}) must be at most a third of worker.rescueAfterMs (${w.rescueAfterMs}), ` +
        `or live workers would be rescued: lower worker.heartbeatMs or raise worker.rescueAfterMs ` +
        `(heartbeatMs ${from(heartbeat)}, rescueAfterMs ${from(rescue)})`,
    );
  }
}

/** The effective config with every secret replaced; safe to print. */
export function redactedConfig(config: SluiceConfig): SluiceConfig {
  const copy = structuredClone(config) as unknown as Record<string, Record<string, unknown>>;
  for (const [key, spec] of schemaKeys()) {
    if (!spec.sensitive) continue;
    const [section, name] = key.split('.') as [string, string];
    const value = copy[section]![name];
    if (typeof value === 'string' && value !== '') copy[section]![name] = /^postgres(ql)?:/.test(value) ? redact(value) : REDACTED;
  }
  return copy as unknown as SluiceConfig;
}
