// The `sluice` command line. Thin: parse, call library functions, print. The daemon itself is
// the Worker (worker.ts); this file adds signals, the HTTP endpoints and the zero-setup database.
//
// Exit codes: 0 ok, 1 operational failure (database unreachable, job not found, ...), 2 usage or
// validation error (bad flag, bad JSON payload, bad config key). Errors are one line on stderr,
// `sluice: ...`, without stack traces or passwords.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type pg from 'pg';
import YAML from 'yaml';
import { cancelJob, getJob, JOB_STATUSES, listJobs, parseJobId, retryJob, type JobDetail, type JobStatus, type JobSummary } from './admin/jobs.js';
import { listWorkers, queueStatus, unservedQueues, type QueueStatus, type WorkerStatus } from './admin/status.js';
import { checkBudget, readBudget, type Budget } from './admin/budget.js';
import { loadConfig, redactedConfig } from './config/load.js';
import type { ConfigInput, SluiceConfig } from './config/schema.js';
import { ConfigError } from './errors.js';
import { redact } from './util/redact.js';
import { createPool, endPool, poolOptions, withClient } from './db/pool.js';
import { errorSummary, isMissingSchema } from './db/errors.js';
import { errorCode, SluiceError, type ErrorCode } from './errors.js';
import { silentLogger } from './observe/logger.js';
import { findLocalDatabase, noDatabaseMessage, type LocalDatabase } from './embedded/local-database.js';
import type { HttpServer } from './http/server.js';
import { addJob, type JobSpec } from './enqueue.js';
import { migrate } from './db/migrate.js';
import type { Worker } from './worker/worker.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const VERSION = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
/** Task handlers used by the zero-setup start when worker.tasks does not exist. */
export const EXAMPLE_TASKS = path.join(root, 'examples', 'tasks');

const EXIT_CODES = `
Exit codes:
  0  success
  1  operational failure (database unreachable, job not found, job in the wrong state)
  2  usage or validation error (unknown flag, bad JSON payload, invalid configuration)

Configuration: --config FILE (YAML or JSON), else $SLUICE_CONFIG; environment variables override
the file and flags override both. With no database.url (DATABASE_URL), \`sluice start\` runs an
embedded PostgreSQL in database.embeddedDir and the other commands find it there.`;

const usageError = (message: string) => new SluiceError('usage', message);
const failure = (message: string) => new SluiceError('unavailable', message);

/** Exit code 2 for errors in what the user gave (arguments, configuration, a job); 1 for the rest. */
const USAGE_CODES: ReadonlySet<ErrorCode | undefined> = new Set(['usage', 'config_invalid', 'invalid_job']);

interface CommonOptions {
  config?: string;
  json?: boolean;
}

// ------------------------------------------------------------------------------------------------
// Helpers

function intArg(name: string, min: number) {
  return (value: string): number => {
    if (!/^-?\d+$/.test(value.trim()) || Number(value) < min || !Number.isSafeInteger(Number(value))) {
      throw new InvalidArgumentError(`${name} must be an integer of at least ${min}.`);
    }
    return Number(value);
  };
}

/** A ConfigError as one line: "invalid configuration in f.yaml: worker.concurrency: must be ..." */
function oneLine(message: string): string {
  const [head, ...items] = message.split('\n').map((l) => l.trim()).filter(Boolean);
  if (!items.length) return head ?? message;
  return `${head!.replace(/:$/, '')}: ${items.map((i) => i.replace(/^- /, '')).join('; ')}`;
}

function loadCliConfig(opts: CommonOptions, flags: ConfigInput = {}, flagNames: Record<string, string> = {}): SluiceConfig {
  try {
    return loadConfig({ file: opts.config, overrides: flags, overrideSource: (key) => flagNames[key] ?? key });
  } catch (err) {
    if (err instanceof ConfigError) throw usageError(oneLine(err.message));
    throw err;
  }
}

/** The database URL: configured, or the embedded server running in database.embeddedDir. */
function databaseUrl(config: SluiceConfig): string {
  if (config.database.url) return config.database.url;
  const local = findLocalDatabase(config.database.embeddedDir);
  if (!local) throw failure(noDatabaseMessage(config.database.embeddedDir));
  return local.url;
}

/** Runs fn with a one-connection pool (application_name sluice-cli); translates database errors. */
async function withDatabase<T>(config: SluiceConfig, fn: (pool: pg.Pool, schema: string) => Promise<T>): Promise<T> {
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

function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

function print(text = ''): void {
  process.stdout.write(text + '\n');
}

function table(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (c === null || c === undefined ? '-' : String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd())
    .join('\n');
}

/** 42 -> "42s", 125 -> "2m05s", 7300 -> "2h01m". */
export function formatAge(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '-';
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`;
}

function jobIdArg(id: string): string {
  try {
    return parseJobId(id);
  } catch (err) {
    throw usageError((err as Error).message);
  }
}

// ------------------------------------------------------------------------------------------------
// Commands

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

interface AddOptions extends CommonOptions {
  payload?: string;
  queue?: string;
  runAt?: string;
  priority?: number;
  maxAttempts?: number;
  key?: string;
}

async function cmdAdd(task: string, opts: AddOptions): Promise<void> {
  let payload: Record<string, unknown> = {};
  if (opts.payload !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(opts.payload);
    } catch (err) {
      throw usageError(`--payload is not valid JSON: ${(err as Error).message}`);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw usageError(`--payload must be a JSON object, got ${Array.isArray(parsed) ? 'an array' : parsed === null ? 'null' : typeof parsed}`);
    }
    payload = parsed as Record<string, unknown>;
  }
  const job: JobSpec = { task, payload };
  if (opts.queue !== undefined) job.queue = opts.queue;
  if (opts.runAt !== undefined) {
    const d = new Date(opts.runAt);
    if (Number.isNaN(d.getTime())) throw usageError(`--run-at is not a valid date: ${JSON.stringify(opts.runAt)} (use ISO 8601, e.g. 2030-01-31T12:00:00Z)`);
    job.runAt = d;
  }
  if (opts.priority !== undefined) job.priority = opts.priority;
  if (opts.maxAttempts !== undefined) job.maxAttempts = opts.maxAttempts;
  if (opts.key !== undefined) job.jobKey = opts.key;
  const config = loadCliConfig(opts);
  const id = await withDatabase(config, (pool, schema) => addJob(pool, job, schema));
  if (opts.json) return printJson({ id });
  print(id);
}

async function cmdStatus(opts: CommonOptions): Promise<void> {
  const config = loadCliConfig(opts);
  const rescueAfterMs = config.worker.rescueAfterMs;
  const { queues, workers, budget } = await withDatabase(config, async (pool, schema) => ({
    queues: await queueStatus(pool, schema),
    workers: await listWorkers(pool, schema, rescueAfterMs),
    budget: await readBudget(pool, schema, { rescueAfterMs }),
  }));
  const unserved = unservedQueues(queues, workers);
  if (opts.json) return printJson({ queues, workers, unserved, budget });
  printQueues(queues);
  print();
  printWorkers(workers, rescueAfterMs);
  print();
  if (unserved.length) {
    print('Queues no live worker takes (their jobs wait; see worker.queues)');
    for (const name of unserved) {
      const q = queues.find((x) => x.queue === name)!;
      print(`  ${name}: ${q.runnable} runnable, ${q.scheduled} scheduled`);
    }
    print();
  }
  print('Connections');
  print(
    `  max_connections ${budget.maxConnections}, reserved ${budget.reservedConnections}, in use ${budget.inUse} ` +
      `(sluice ${budget.sluiceConnected}, others ${budget.others}), available ${budget.available}`,
  );
  print(`  live workers may hold ${budget.sluiceBudget} of ${budget.usableConnections} usable (poolSize + 1 each)`);
}

function printQueues(queues: QueueStatus[]): void {
  print('Queues');
  if (!queues.length) return print('  (no jobs yet)');
  print(
    indent(
      table(
        ['QUEUE', 'RUNNABLE', 'SCHEDULED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED', 'OLDEST RUNNABLE'],
        queues.map((q) => [q.queue, q.runnable, q.scheduled, q.running, q.completed, q.failed, q.cancelled, formatAge(q.oldestRunnableSeconds)]),
      ),
    ),
  );
}

function printWorkers(workers: WorkerStatus[], rescueAfterMs: number): void {
  print(`Workers (alive: heartbeat within ${formatAge(rescueAfterMs / 1000)})`);
  if (!workers.length) return print('  (none running)');
  print(
    indent(
      table(
        ['ID', 'HOST', 'PID', 'QUEUES', 'CONCURRENCY', 'POOL', 'RUNNING', 'HEARTBEAT', 'STATE'],
        workers.map((w) => [
          w.id,
          w.host,
          w.pid,
          w.queues.join(','),
          w.concurrency,
          w.poolSize,
          w.running,
          `${formatAge(w.heartbeatAgeSeconds)} ago`,
          w.alive ? 'alive' : 'presumed dead',
        ]),
      ),
    ),
  );
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
}

interface JobsOptions extends CommonOptions {
  status?: JobStatus;
  queue?: string;
  task?: string;
  limit?: number;
}

async function cmdJobs(opts: JobsOptions): Promise<void> {
  const config = loadCliConfig(opts);
  const jobs = await withDatabase(config, (pool, schema) =>
    listJobs(pool, schema, { status: opts.status, queue: opts.queue, task: opts.task, limit: opts.limit ?? 20 }),
  );
  if (opts.json) return printJson(jobs);
  if (!jobs.length) return print('no jobs match');
  print(
    table(
      ['ID', 'QUEUE', 'TASK', 'STATUS', 'ATTEMPTS', 'RUN AT', 'FINISHED', 'LAST ERROR'],
      jobs.map((j: JobSummary) => [
        j.id,
        j.queue,
        j.task,
        j.status,
        `${j.attempts}/${j.maxAttempts}`,
        j.runAt,
        j.finishedAt,
        j.lastError ? truncate(j.lastError, 80) : null,
      ]),
    ),
  );
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

async function cmdShow(id: string, opts: CommonOptions): Promise<void> {
  const jobId = jobIdArg(id);
  const config = loadCliConfig(opts);
  const job = await withDatabase(config, (pool, schema) => getJob(pool, schema, jobId));
  if (opts.json) return printJson(job);
  printJob(job);
}

function printJob(j: JobDetail): void {
  const rows: [string, string][] = [
    ['id', j.id],
    ['task', j.task],
    ['queue', j.queue],
    ['status', j.status],
    ['attempts', `${j.attempts} of ${j.maxAttempts}`],
    ['priority', String(j.priority)],
    ['job key', j.jobKey ?? '-'],
    ['run at', j.runAt],
    ['created', j.createdAt],
    ['started', j.startedAt ?? '-'],
    ['finished', j.finishedAt ?? '-'],
    ['locked by', j.lockedBy ? `${j.lockedBy} since ${j.lockedAt}` : '-'],
    ['payload', JSON.stringify(j.payload)],
    ['result', j.result === null || j.result === undefined ? '-' : JSON.stringify(j.result)],
  ];
  print(table(['', ''], rows).split('\n').slice(1).join('\n'));
  if (j.errors.length) {
    print(`errors (most recent ${j.errors.length}):`);
    for (const e of j.errors) print(`  attempt ${e.attempt} at ${e.at}: ${e.error.split('\n')[0]}`);
  }
  if (j.lastError) {
    print('last error:');
    print(indent(j.lastError));
  }
}

async function cmdRetryOrCancel(action: 'retry' | 'cancel', id: string, opts: CommonOptions): Promise<void> {
  const jobId = jobIdArg(id);
  const config = loadCliConfig(opts);
  const change = await withDatabase(config, (pool, schema) =>
    action === 'retry' ? retryJob(pool, schema, jobId) : cancelJob(pool, schema, jobId),
  );
  if (opts.json) return printJson(change);
  print(action === 'retry' ? `job ${change.id} queued to run now` : `job ${change.id} cancelled`);
}

async function cmdBudget(opts: CommonOptions): Promise<void> {
  const config = loadCliConfig(opts);
  const rescueAfterMs = config.worker.rescueAfterMs;
  const budget: Budget = await withDatabase(config, (pool, schema) => readBudget(pool, schema, { rescueAfterMs }));
  const check = checkBudget(budget, config.database.poolSize);
  if (opts.json) return printJson({ ...budget, check: { poolSize: config.database.poolSize, ...check } });
  print(
    table(
      ['', ''],
      [
        ['max_connections', String(budget.maxConnections)],
        ['reserved', `${budget.reservedConnections} (superuser_reserved_connections + reserved_connections)`],
        ['usable', String(budget.usableConnections)],
        ['in use now', String(budget.inUse)],
        ['  sluice', `${budget.sluiceConnected}${budget.sluiceUnattributed ? ` (${budget.sluiceUnattributed} not attributed to a live worker)` : ''}`],
        ['  others', String(budget.others)],
        ['available now', String(budget.available)],
      ],
    )
      .split('\n')
      .slice(1)
      .join('\n'),
  );
  print();
  if (!budget.schemaInstalled) print(`sluice is not installed in schema "${config.database.schema}": no workers to list`);
  else if (!budget.sluice.length) print('no live sluice workers');
  else {
    print(
      table(
        ['WORKER', 'HOST', 'PID', 'POOL', 'BUDGET', 'CONNECTED', 'HEARTBEAT'],
        budget.sluice.map((w) => [w.id, w.host, w.pid, w.poolSize, w.budget, w.connected ?? '?', `${formatAge(w.heartbeatAgeSeconds)} ago`]),
      ),
    );
    print(`live workers' budget: ${budget.sluiceBudget} (poolSize + 1 each)`);
  }
  print();
  print(`one more worker with database.poolSize ${config.database.poolSize}: ${check.message}`);
}

async function cmdConfigCheck(opts: CommonOptions): Promise<void> {
  const config = loadCliConfig(opts);
  const shown = redactedConfig(config);
  if (opts.json) return printJson(shown);
  const source = opts.config ?? process.env.SLUICE_CONFIG;
  process.stderr.write(`configuration is valid${source ? ` (${source} + environment)` : ' (defaults + environment)'}\n`);
  process.stdout.write(YAML.stringify(shown));
}

// ------------------------------------------------------------------------------------------------
// start: the daemon

interface StartOptions extends CommonOptions {
  migrate?: boolean;
  tasks?: string;
  concurrency?: number;
  queues?: string;
}

/** A task name to show in the "how to enqueue" hint: hello when it exists, else the first. */
function exampleTask(tasksDir: string): string {
  try {
    if (!statSync(tasksDir).isDirectory()) return 'TASK';
    const names = readdirSync(tasksDir)
      .filter((f) => /\.(m?js|cjs|m?ts)$/.test(f) && !f.endsWith('.d.ts') && !f.includes('.test.'))
      .map((f) => f.replace(/\.[^.]+$/, ''))
      .sort();
    return names.includes('hello') ? 'hello' : (names[0] ?? 'TASK');
  } catch {
    return 'TASK';
  }
}

/** Set once `start` runs: the daemon's process ends with process.exit, whatever is still open. */
let daemon = false;

async function cmdStart(opts: StartOptions): Promise<void> {
  daemon = true;
  const flags = {
    worker: { tasks: opts.tasks, concurrency: opts.concurrency, queues: opts.queues?.split(',').map((q) => q.trim()) },
  } satisfies ConfigInput;
  const flagNames = { 'worker.tasks': '--tasks', 'worker.concurrency': '--concurrency', 'worker.queues': '--queues' };
  let config = loadCliConfig(opts, flags, flagNames);
  // the daemon's modules are loaded only here: the other commands start faster without them
  const [{ Worker }, { startHttpServer }, { startLocalDatabase }, { createLogger }] = await Promise.all([
    import('./worker/worker.js'),
    import('./http/server.js'),
    import('./embedded/local-database.js'),
    import('./observe/logger.js'),
  ]);
  const log = createLogger(config.log);

  let worker: Worker | undefined;
  let http: HttpServer | undefined;
  let local: LocalDatabase | undefined;
  let signalled: NodeJS.Signals | undefined;
  let onFirstSignal: () => void = () => undefined;
  const firstSignal = new Promise<void>((resolve) => (onFirstSignal = resolve));
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) {
      log.warn({ signal: sig }, `second ${sig}: exiting now without waiting for running jobs (rescue will requeue them)`);
      process.exit(sig === 'SIGINT' ? 130 : 143);
    }
    signalled = sig;
    log.info({ signal: sig }, `${sig} received: stopping gracefully (send it again to exit at once)`);
    // while the worker is still starting (waiting for the database, say) this makes start() give up
    if (worker && worker.state === 'starting') void worker.stop().catch(() => undefined);
    onFirstSignal();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('uncaughtException', (err) => {
    log.fatal({ err: errorSummary(err), stack: err.stack }, 'uncaught exception: exiting');
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    log.fatal({ err: errorSummary(err), stack: (err as Error)?.stack }, 'unhandled rejection: exiting');
    process.exit(1);
  });

  const cleanup = async () => {
    await http?.close().catch(() => undefined);
    await local?.stop().catch(() => undefined);
  };

  let migrateAtStart = Boolean(opts.migrate);
  try {
    if (!config.database.url) {
      const dir = path.resolve(config.database.embeddedDir);
      log.info({ dataDir: dir }, `no database.url: starting the embedded PostgreSQL in ${dir}`);
      try {
        local = await startLocalDatabase({ dataDir: dir });
      } catch (err) {
        throw failure(`cannot start the embedded PostgreSQL: ${errorSummary(err).message}`);
      }
      // task handlers that open connections of their own find the embedded database here too
      process.env.DATABASE_URL = local.url;
      migrateAtStart = true;
      log.info(
        { psql: local.url, dataDir: local.dataDir, port: local.port, reused: !local.owned },
        `embedded PostgreSQL ${local.owned ? 'started' : 'already running, reused'} on port ${local.port}: psql ${local.url}`,
      );
      const examples = !existsSync(config.worker.tasks) && opts.tasks === undefined;
      if (examples) log.info({ tasks: EXAMPLE_TASKS }, `${config.worker.tasks} does not exist: running the example tasks from ${EXAMPLE_TASKS}`);
      config = loadCliConfig(opts, { database: { url: local.url }, worker: { ...flags.worker, ...(examples ? { tasks: EXAMPLE_TASKS } : {}) } }, flagNames);
    }
    if (!existsSync(config.worker.tasks)) {
      throw usageError(
        `worker.tasks: ${config.worker.tasks} does not exist (a folder of task modules, or one module; set --tasks, SLUICE_TASKS or worker.tasks)`,
      );
    }
    worker = new Worker({ config, logger: log, migrate: migrateAtStart });
    if (config.http.enabled) {
      http = await startHttpServer(worker, { host: config.http.host, port: config.http.port }).catch((err: Error) => {
        throw failure(err.message);
      });
    }
    if (!signalled) {
      try {
        await worker.start();
      } catch (err) {
        // a signal during the start is a normal shutdown, not a failure
        if (!signalled) throw failure(`cannot start the worker: ${errorSummary(err).message}`);
      }
    }
  } catch (err) {
    await cleanup();
    throw err;
  }

  if (!signalled) {
    const schema = config.database.schema;
    const task = exampleTask(config.worker.tasks);
    const cli = `sluice add ${task} --payload '{"name":"world"}'`;
    const sql = `SELECT ${schema}.add_job('${task}', '{"name":"world"}');`;
    if (http) {
      log.info(
        { http: { healthz: `${http.url}/healthz`, readyz: `${http.url}/readyz`, metrics: `${http.url}/metrics` } },
        `HTTP endpoints on ${http.url}: /healthz (liveness), /readyz (readiness), /metrics (Prometheus)`,
      );
    }
    log.info({ cli, sql }, `enqueue a job from another terminal: ${cli}   or in SQL: ${sql}`);
    await firstSignal;
  }

  let code = 0;
  try {
    await worker.stop();
  } catch (err) {
    log.error({ err: errorSummary(err) }, 'graceful stop failed');
    code = 1;
  }
  await cleanup();
  if (local?.owned) log.info('embedded PostgreSQL stopped');
  log.info({ exitCode: code }, 'sluice exited');
  process.exit(code);
}

// ------------------------------------------------------------------------------------------------
// The program

function common(cmd: Command, json = true): Command {
  cmd.option('-c, --config <file>', 'config file (YAML or JSON); default $SLUICE_CONFIG');
  if (json) cmd.option('--json', 'print JSON for machines instead of a table');
  cmd.addHelpText('after', EXIT_CODES);
  return cmd;
}

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

  common(
    program
      .command('start')
      .description('run the worker until SIGTERM/SIGINT (the first drains running jobs, a second exits at once)')
      .option('--migrate', 'apply pending migrations before starting')
      .option('--tasks <dir>', 'folder of task modules (worker.tasks)')
      .option('--concurrency <n>', 'jobs run at once (worker.concurrency)', intArg('--concurrency', 1))
      .option('--queues <list>', 'comma-separated queues to take jobs from (worker.queues)'),
    false,
  ).action((opts: StartOptions) => cmdStart(opts));

  common(program.command('migrate').description('apply pending schema migrations')).action((opts: CommonOptions) => cmdMigrate(opts));

  common(
    program
      .command('add')
      .description('enqueue a job and print its id')
      .argument('<task>', 'task name (the handler module name)')
      .option('-p, --payload <json>', 'payload, a JSON object', undefined)
      .option('-q, --queue <queue>', 'queue (default "default")')
      .option('--run-at <iso>', 'run no earlier than this time (ISO 8601)')
      .option('--priority <n>', 'priority, lower runs first (default 0)', intArg('--priority', 0))
      .option('--max-attempts <n>', 'attempts before the job fails for good (default 25)', intArg('--max-attempts', 1))
      .option('-k, --key <key>', 'job key: at most one unfinished job per key (a duplicate returns its id)'),
  ).action((task: string, opts: AddOptions) => cmdAdd(task, opts));

  common(program.command('status').description('jobs per queue and state, live workers, connection budget')).action(
    (opts: CommonOptions) => cmdStatus(opts),
  );

  common(
    program
      .command('jobs')
      .description('list jobs, newest first')
      .addOption(new Option('-s, --status <status>', 'only jobs in this state').choices(JOB_STATUSES))
      .option('-q, --queue <queue>', 'only jobs of this queue')
      .option('-t, --task <task>', 'only jobs of this task')
      .option('-n, --limit <n>', 'at most this many (default 20)', intArg('--limit', 1)),
  ).action((opts: JobsOptions) => cmdJobs(opts));

  common(program.command('show').description('one job with its payload, result and errors').argument('<id>', 'job id')).action(
    (id: string, opts: CommonOptions) => cmdShow(id, opts),
  );

  common(
    program.command('retry').description('run a finished (failed, cancelled, completed) job again now').argument('<id>', 'job id'),
  ).action((id: string, opts: CommonOptions) => cmdRetryOrCancel('retry', id, opts));

  common(
    program.command('cancel').description('cancel a queued or running job (a running handler is aborted)').argument('<id>', 'job id'),
  ).action((id: string, opts: CommonOptions) => cmdRetryOrCancel('cancel', id, opts));

  common(
    program.command('budget').description('connections: allowed by the server, budgeted by sluice workers, used by others'),
  ).action((opts: CommonOptions) => cmdBudget(opts));

  const config = program.command('config').description('configuration tools');
  config.addHelpText('after', EXIT_CODES);
  common(
    config.command('check').description('validate the configuration and print it with secrets redacted (exit 2 when invalid)'),
  ).action((opts: CommonOptions) => cmdConfigCheck(opts));

  return program;
}


export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander has printed the help, the version or its error line already
      return ['commander.helpDisplayed', 'commander.version', 'commander.executeSubCommandAsync'].includes(err.code) ? 0 : 2;
    }
    const code = errorCode(err);
    const message = code === 'config_invalid' ? oneLine((err as Error).message) : errorSummary(err).message;
    process.stderr.write(`sluice: ${message}\n`);
    return USAGE_CODES.has(code) ? 2 : 1;
  }
}

const exitCode = await main(process.argv);
if (daemon) process.exit(exitCode);
process.exitCode = exitCode;


