// Screenshots of every dashboard page into docs/, with real data: a throwaway embedded
// PostgreSQL, a worker running real handlers (some fail, one is slow), an hour of history, and
// Debian's Chromium. `npm run docs:screenshots` (needs /usr/bin/chromium).
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { chromium } from 'playwright-core';
import { Registry } from 'prom-client';
import { createDashboard } from '../src/dashboard/index.js';
import { migrate } from '../src/db/migrate.js';
import { LocalCluster } from '../src/embedded/cluster.js';
import { startHttpServer } from '../src/http/server.js';
import { createLogger, silentLogger } from '../src/observe/logger.js';
import { Worker } from '../src/worker/worker.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const docs = path.join(root, 'docs');
const TOKEN = 'screenshot-token';
const CRON = [
  { name: 'digest-emails', schedule: '*/5 * * * * *', task: 'send_email', payload: { template: 'digest' } },
  { name: 'nightly-report', schedule: '0 3 * * *', timezone: 'Europe/Berlin', task: 'build_report', queue: 'reports' },
];

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-shots-'));
  chmodSync(dir, 0o755);
  const cluster = await LocalCluster.create({ dataDir: path.join(dir, 'data'), settings: { fsync: 'off', max_connections: 50 } });
  await cluster.start();
  const url = cluster.url();
  const pool = new pg.Pool({ connectionString: url, max: 2, application_name: 'billing-app' });
  const workers: Worker[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  let http: Awaited<ReturnType<typeof startHttpServer>> | undefined;
  try {
    await migrate(pool, 'sluice');
    // an hour of history: completed and failed jobs spread over the last 60 minutes
    await pool.query(`
      INSERT INTO sluice.jobs (task, queue, status, attempts, max_attempts, payload, last_error, errors, run_at, created_at, started_at, finished_at)
      SELECT task, queue, status, CASE WHEN status = 'failed' THEN 3 ELSE 1 END, 3, jsonb_build_object('n', g),
             CASE WHEN status = 'failed' THEN 'Error: card declined (' || g || ')' END,
             CASE WHEN status = 'failed' THEN jsonb_build_array(jsonb_build_object('attempt', 3, 'at', t, 'error', 'Error: card declined (' || g || ')')) ELSE '[]' END,
             t, t, t - interval '300 milliseconds', t
      FROM (SELECT g, (ARRAY['send_email', 'resize_image', 'charge_card'])[1 + g % 3] AS task,
                   (ARRAY['default', 'images', 'billing'])[1 + g % 3] AS queue,
                   CASE WHEN g % 3 = 2 AND g % 7 = 0 THEN 'failed' ELSE 'completed' END AS status,
                   now() - make_interval(secs => 3600 * power(random(), 0.7)) AS t
            FROM generate_series(1, 4000) g) s
      ORDER BY t`);
    // a backlog nobody takes yet, and jobs due later
    await pool.query("SELECT sluice.add_job('build_report', jsonb_build_object('month', '2026-11', 'n', g), queue => 'reports', run_at => now() - interval '7 minutes') FROM generate_series(1, 40) g");
    await pool.query("SELECT sluice.add_job('send_email', jsonb_build_object('to', 'ada@example.com'), run_at => now() + interval '2 hours', job_key => 'digest-ada')");

    const log = createLogger({ level: 'warn', format: 'json' });
    let declined = 0;
    const tasks = {
      send_email: async () => ({ sent: true }),
      build_report: async () => ({ pages: 12 }),
      resize_image: async (_p: unknown, ctx: { signal: AbortSignal }) => {
        await new Promise((r) => {
          const t = setTimeout(r, 120_000);
          ctx.signal.addEventListener('abort', () => (clearTimeout(t), r(undefined)));
        });
        return { resized: true };
      },
      charge_card: async (payload: { amount?: number; customer?: string }) => {
        if (payload.customer === 'cus_1' || ++declined % 2 === 1) throw new Error(`card declined: insufficient funds for ${payload.amount ?? 0} EUR`);
        return { charged: payload.amount };
      },
    };
    for (const queues of [['default', 'billing'], ['images']]) {
      const w = new Worker({
        config: { database: { url, poolSize: 3 }, worker: { queues, concurrency: 4, retryBaseMs: 200, retryMaxMs: 400, pollMs: 1000 }, http: { enabled: false }, cron: CRON },
        tasks,
        logger: log,
      });
      await w.start();
      workers.push(w);
    }
    await pool.query("SELECT sluice.add_job('resize_image', jsonb_build_object('image', 'cat-' || g || '.png', 'width', 800), queue => 'images') FROM generate_series(1, 6) g");
    await pool.query("SELECT sluice.add_job('charge_card', jsonb_build_object('amount', 42 + g, 'customer', 'cus_' || g), queue => 'billing', max_attempts => 3) FROM generate_series(1, 4) g");
    await pool.query("SELECT sluice.add_job('send_email', jsonb_build_object('to', 'user' || g || '@example.com', 'template', 'welcome')) FROM generate_series(1, 20) g");
    await until('a job to fail three times', async () => (await pool.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE payload->>'customer' = 'cus_1' AND status = 'failed'")).rows[0].n >= 1);
    await until('slow jobs to run', async () => (await pool.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE status = 'running'")).rows[0].n >= 4);
    await until('a recurring job to tick', async () => (await pool.query("SELECT 1 FROM sluice.cron_ticks WHERE name = 'digest-emails'")).rowCount! > 0);
    await pool.query("SELECT sluice.set_queue_limits('billing', concurrency => 2, rate_limit => 50)");
    await pool.query("SELECT sluice.pause_queue('reports')");
    const failed = (await pool.query("SELECT id FROM sluice.jobs WHERE payload->>'customer' = 'cus_1'")).rows[0].id as string;
    // an analytics session that holds the xmin horizon, for the health page
    const analytics = new pg.Client({ connectionString: url, application_name: 'metabase' });
    await analytics.connect();
    await analytics.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await analytics.query('SELECT count(*) FROM sluice.jobs');
    cleanups.push(() => analytics.end());

    const dashboard = createDashboard({ pool: () => workers[0]!.db, schema: 'sluice', token: TOKEN, rescueAfterMs: 15_000, health: { xminAgeWarnMs: 1000, deadRowsWarn: 100_000, notifyQueueWarn: 0.5 }, cron: CRON, log: silentLogger() });
    http = await startHttpServer({ ready: true, state: 'running', metrics: { registry: new Registry() } }, { host: '127.0.0.1', port: 0, dashboard });
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1360, height: 860 } });
      await page.goto(`${http.url}/dashboard/`);
      await page.screenshot({ path: path.join(docs, 'dashboard-login.png') });
      await page.fill('#token', TOKEN);
      await page.click('button[type=submit]');
      await page.getByRole('button', { name: 'Log out' }).waitFor();
      const shots: [string, string, string][] = [
        ['overview', '#/', 'section[data-queue] canvas'],
        ['jobs', '#/jobs?state=failed', 'table.jobs tbody tr'],
        ['job', `#/jobs/${failed}`, 'table.attempts tbody tr'],
        ['workers', '#/workers', 'table.workers tbody tr'],
        ['connections', '#/budget', '[data-testid=max-connections]'],
        ['recurring', '#/cron', 'tr[data-cron="digest-emails"]'],
        ['health', '#/health', '[data-testid=health-warnings]'],
      ];
      for (const [name, hash, ready] of shots) {
        await page.goto(`${http.url}/dashboard/${hash}`);
        await page.locator(ready).first().waitFor();
        await page.screenshot({ path: path.join(docs, `dashboard-${name}.png`), fullPage: true });
        console.log(`docs/dashboard-${name}.png`);
      }
    } finally {
      await browser.close();
    }
  } finally {
    await http?.close();
    for (const c of cleanups) await c().catch(() => undefined);
    for (const w of workers) await w.stop().catch(() => undefined);
    await pool.end();
    await cluster.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
