// `sluice dashboard`: the dashboard alone, for operators who want a UI without running jobs
// (one container, one database URL). It holds at most 2 connections: a pool of 2, nothing else.
import type { Command } from 'commander';
import { Registry } from 'prom-client';
import type { ConfigInput } from '../../config/schema.js';
import { errorSummary } from '../../db/errors.js';
import { createPool, endPool, poolOptions, withClient } from '../../db/pool.js';
import { redact } from '../../util/redact.js';
import { common, databaseUrl, failure, intArg, loadCliConfig, reportError, usageError, type CommonOptions } from '../context.js';

/** The standalone dashboard's connection bound. */
export const DASHBOARD_POOL_SIZE = 2;

interface DashboardCliOptions extends CommonOptions {
  host?: string;
  port?: number;
}

export function register(program: Command): void {
  common(
    program
      .command('dashboard')
      .description(`serve the dashboard on http.host:http.port/dashboard/ without running jobs (at most ${DASHBOARD_POOL_SIZE} connections)`)
      .option('--host <host>', 'address to bind (http.host)')
      .option('--port <port>', 'port to bind, 0 picks a free one (http.port)', intArg('--port', 0)),
    false,
  ).action(async (opts: DashboardCliOptions) => {
    try {
      await cmdDashboard(opts);
    } catch (err) {
      process.exit(reportError(err));
    }
  });
}

async function cmdDashboard(opts: DashboardCliOptions): Promise<void> {
  const flags = { http: { host: opts.host, port: opts.port } } satisfies ConfigInput;
  const config = loadCliConfig(opts, flags, { 'http.host': '--host', 'http.port': '--port' });
  const [{ startHttpServer }, { createLogger }, { createDashboard, dashboardRefusal }] = await Promise.all([
    import('../../http/server.js'),
    import('../../observe/logger.js'),
    import('../../dashboard/index.js'),
  ]);
  const refusal = dashboardRefusal(config.http.host, config.http.dashboardToken);
  if (refusal) throw usageError(refusal);
  const log = createLogger(config.log);
  const url = databaseUrl(config);
  const pool = createPool({ ...poolOptions({ ...config, database: { ...config.database, url } }, 'sluice-dashboard'), max: DASHBOARD_POOL_SIZE }, log);
  try {
    await withClient(pool, async () => undefined);
  } catch (err) {
    await endPool(pool, 2000);
    throw failure(`cannot connect to the database at ${redact(url)}: ${errorSummary(err).message}`);
  }
  const dashboard = createDashboard({
    pool: () => pool,
    schema: config.database.schema,
    token: config.http.dashboardToken,
    rescueAfterMs: config.worker.rescueAfterMs,
    health: config.health,
    cron: config.cron,
    log,
  });
  // /healthz and /readyz answer for this process; /metrics is empty (it runs no jobs)
  const self = { ready: true, state: 'running', metrics: { registry: new Registry() } };
  const http = await startHttpServer(self, { host: config.http.host, port: config.http.port, dashboard }).catch(async (err: Error) => {
    await endPool(pool, 2000);
    throw failure(err.message);
  });
  log.info(
    { dashboard: `${http.url}/dashboard/`, readOnly: !config.http.dashboardToken, maxConnections: DASHBOARD_POOL_SIZE },
    `dashboard on ${http.url}/dashboard/ (${config.http.dashboardToken ? 'token required' : 'read-only'}; at most ${DASHBOARD_POOL_SIZE} connections)`,
  );
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await http.close();
  await endPool(pool, 2000);
  process.exit(0);
}
