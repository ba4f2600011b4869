// `sluice start`: the daemon. Signals, the HTTP endpoints and the zero-setup embedded database
// live here; the worker itself is worker/worker.ts. The process ends with process.exit, whatever
// is still open: a handler that ignores its signal must not keep a stopped daemon alive.
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import type { ConfigInput } from '../../config/schema.js';
import { errorSummary } from '../../db/errors.js';
import type { LocalDatabase } from '../../embedded/local-database.js';
import type { HttpServer } from '../../http/server.js';
import type { Worker } from '../../worker/worker.js';
import { errorCode } from '../../errors.js';
import { common, failure, intArg, loadCliConfig, reportError, usageError, type CommonOptions } from '../context.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** Task handlers used by the zero-setup start when worker.tasks does not exist. */
export const EXAMPLE_TASKS = path.join(root, 'examples', 'tasks');

export function register(program: Command): void {
  common(
    program
      .command('start')
      .description('run the worker until SIGTERM/SIGINT (the first drains running jobs, a second exits at once)')
      .option('--migrate', 'apply pending migrations before starting')
      .option('--tasks <dir>', 'folder of task modules (worker.tasks)')
      .option('--concurrency <n>', 'jobs run at once (worker.concurrency)', intArg('--concurrency', 1))
      .option('--queues <list>', 'comma-separated queues to take jobs from (worker.queues)'),
    false,
  ).action(async (opts: StartOptions) => {
    try {
      await cmdStart(opts);
    } catch (err) {
      process.exit(reportError(err));
    }
  });
}

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

async function cmdStart(opts: StartOptions): Promise<void> {
  const flags = {
    worker: { tasks: opts.tasks, concurrency: opts.concurrency, queues: opts.queues?.split(',').map((q) => q.trim()) },
  } satisfies ConfigInput;
  const flagNames = { 'worker.tasks': '--tasks', 'worker.concurrency': '--concurrency', 'worker.queues': '--queues' };
  let config = loadCliConfig(opts, flags, flagNames);
  // the daemon's modules are loaded only here: the other commands start faster without them
  const [{ Worker }, { startHttpServer }, { startLocalDatabase }, { createLogger }, { createDashboard, dashboardRefusal }] = await Promise.all([
    import('../../worker/worker.js'),
    import('../../http/server.js'),
    import('../../embedded/local-database.js'),
    import('../../observe/logger.js'),
    import('../../dashboard/index.js'),
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
      // the dashboard reads and acts through the worker's own pool: still at most poolSize + 1 connections
      const refusal = dashboardRefusal(config.http.host, config.http.dashboardToken);
      if (refusal) log.warn(refusal);
      const running = worker;
      const dashboard = refusal
        ? undefined
        : createDashboard({ pool: () => running.db, schema: config.database.schema, token: config.http.dashboardToken, rescueAfterMs: config.worker.rescueAfterMs, health: config.health, cron: config.cron, log });
      http = await startHttpServer(worker, { host: config.http.host, port: config.http.port, dashboard }).catch((err: Error) => {
        throw failure(err.message);
      });
    }
    if (!signalled) {
      try {
        await worker.start();
      } catch (err) {
        // a signal during the start is a normal shutdown, not a failure
        if (!signalled) {
          const message = `cannot start the worker: ${errorSummary(err).message}`;
          // what the user gave (tasks, configuration) stays a usage error: exit 2
          throw errorCode(err) === 'usage' ? usageError(message) : failure(message);
        }
      }
    }
  } catch (err) {
    await cleanup();
    throw err;
  }

  if (!signalled) {
    const schema = config.database.schema;
    const task = exampleTask(config.worker.tasks);
    // the example's payload only for the example task: another task would not know what to do with it
    const cli = task === 'hello' ? `sluice add hello --payload '{"name":"world"}'` : `sluice add ${task}`;
    const sql = task === 'hello' ? `SELECT ${schema}.add_job('hello', '{"name":"world"}');` : `SELECT ${schema}.add_job('${task}');`;
    if (http) {
      log.info(
        { http: { healthz: `${http.url}/healthz`, readyz: `${http.url}/readyz`, metrics: `${http.url}/metrics`, dashboard: dashboardRefusal(config.http.host, config.http.dashboardToken) ? null : `${http.url}/dashboard/` } },
        `HTTP endpoints on ${http.url}: /healthz (liveness), /readyz (readiness), /metrics (Prometheus), /dashboard/`,
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
