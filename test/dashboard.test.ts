// The dashboard over HTTP against a real PostgreSQL: who may read and act (token, cookie, CSRF,
// read-only without a token, not served on a public address without one), what the API returns
// (keyset pages, filters, attempts) and that its actions change jobs through the admin functions.
// The browser's view of the same is dashboard-browser.test.ts.
import { expect } from 'chai';
import pg from 'pg';
import { Registry } from 'prom-client';
import { createDashboard } from '../src/dashboard/index.js';
import { startHttpServer, type HttpServer } from '../src/http/server.js';
import { silentLogger } from '../src/observe/logger.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { killAllCli, runCli, startCli } from './support/cli.js';
import { migrated } from './support/worker.js';

const TOKEN = 'correct horse battery staple';
const CRON = [
  { name: 'nightly-report', schedule: '0 3 * * *', timezone: 'Europe/Berlin', task: 'report', queue: 'reports' },
  { name: 'never-ticked', schedule: '*/5 * * * *', task: 'ping' },
];
const self = { ready: true, state: 'running', metrics: { registry: new Registry() } };

async function serve(pool: pg.Pool, token: string): Promise<HttpServer> {
  const dashboard = createDashboard({ pool: () => pool, schema: 'sluice', token, rescueAfterMs: 15_000, health: { xminAgeWarnMs: 1, deadRowsWarn: 100_000, notifyQueueWarn: 0.5 }, cron: CRON, log: silentLogger() });
  return startHttpServer(self, { host: '127.0.0.1', port: 0, dashboard });
}

async function addFailed(pool: pg.Pool, task: string, error: string, fields: Record<string, unknown> = {}): Promise<string> {
  const { rows } = await pool.query(
    `INSERT INTO sluice.jobs (task, queue, payload, status, attempts, max_attempts, last_error, errors, started_at, finished_at)
     VALUES ($1, $2, $3, 'failed', 2, 2, $4, jsonb_build_array(jsonb_build_object('attempt', 1, 'at', now() - interval '1 minute', 'error', 'first'),
                                                              jsonb_build_object('attempt', 2, 'at', now(), 'error', $4::text)),
             now() - interval '2 seconds', now()) RETURNING id`,
    [task, fields.queue ?? 'default', JSON.stringify(fields.payload ?? {}), error],
  );
  return String(rows[0].id);
}

const body = (res: Response): Promise<any> => res.json();

const status = async (pool: pg.Pool, id: string) => (await pool.query('SELECT status FROM sluice.jobs WHERE id = $1', [id])).rows[0]?.status as string | undefined;

describe('dashboard access and API', function () {
  let url: string;
  let pool: pg.Pool;
  let open: HttpServer;
  let locked: HttpServer;

  before(async () => {
    url = await createTestDatabase();
    pool = await migrated(url, 2);
    open = await serve(pool, '');
    locked = await serve(pool, TOKEN);
  });
  after(async () => {
    await open?.close();
    await locked?.close();
    await pool?.end();
    await killAllCli();
  });

  const post = (base: string, path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${base}/dashboard/${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), redirect: 'manual' });

  describe('without a token', () => {
    it('serves the page and reads, and refuses every action with 403, changing nothing', async () => {
      const id = await addFailed(pool, 'ro', 'boom');
      const page = await fetch(`${open.url}/dashboard/`);
      expect(page.status).to.equal(200);
      expect(page.headers.get('content-security-policy')).to.match(/script-src 'self' 'sha256-/);
      expect((await fetch(`${open.url}/dashboard/api/overview`)).status).to.equal(200);
      const session = await body(await fetch(`${open.url}/dashboard/api/session`));
      expect(session).to.include({ readOnly: true, csrf: null });
      for (const action of ['retry', 'cancel', 'run-now', 'delete']) {
        const res = await post(open.url, `api/jobs/${id}/${action}`, {});
        expect(res.status, action).to.equal(403);
        expect((await body(res)).error).to.match(/read-only.*http\.dashboardToken/);
      }
      expect((await post(open.url, 'api/jobs/bulk', { action: 'retry', filter: { state: 'failed' } })).status).to.equal(403);
      for (const action of ['pause', 'resume', 'limits']) expect((await post(open.url, `api/queues/default/${action}`, { concurrency: 1 })).status, action).to.equal(403);
      expect((await pool.query('SELECT count(*)::int AS n FROM sluice.queues')).rows[0].n).to.equal(0);
      expect(await status(pool, id)).to.equal('failed');
    });
  });

  describe('with a token', () => {
    it('answers 401 to a request without the token or with a wrong one, on pages and API alike', async () => {
      expect((await fetch(`${locked.url}/dashboard/api/overview`)).status).to.equal(401);
      expect((await fetch(`${locked.url}/dashboard/api/overview`, { headers: { authorization: 'Bearer wrong' } })).status).to.equal(401);
      expect((await fetch(`${locked.url}/dashboard/api/jobs`, { headers: { cookie: 'sluice_dashboard=forged' } })).status).to.equal(401);
      const page = await fetch(`${locked.url}/dashboard/`);
      expect(page.status).to.equal(401);
      expect(await page.text()).to.include('<form method="post" action="./login"');
      expect((await fetch(`${locked.url}/dashboard/api/overview`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).to.equal(200);
    });

    it('the login form answers 401 to a wrong token and sets an HttpOnly SameSite=Strict cookie for the right one', async () => {
      const login = (token: string) =>
        fetch(`${locked.url}/dashboard/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token }), redirect: 'manual' });
      const wrong = await login('nope');
      expect(wrong.status).to.equal(401);
      expect(wrong.headers.get('set-cookie')).to.equal(null);
      const right = await login(TOKEN);
      expect(right.status).to.equal(303);
      const cookie = right.headers.get('set-cookie')!;
      expect(cookie).to.match(/^sluice_dashboard=[^;]+; Path=\/dashboard; HttpOnly; SameSite=Strict$/);
      expect(cookie).to.not.include(TOKEN);
      const value = cookie.split(';')[0]!;
      expect((await fetch(`${locked.url}/dashboard/`, { headers: { cookie: value } })).status).to.equal(200);
      const session = await body(await fetch(`${locked.url}/dashboard/api/session`, { headers: { cookie: value } }));
      expect(session.csrf).to.be.a('string').with.length.above(20);
    });

    it('refuses a cookie-authenticated action without the CSRF header, and does it with the header', async () => {
      const id = await addFailed(pool, 'csrf', 'boom');
      const login = await fetch(`${locked.url}/dashboard/login`, { method: 'POST', body: new URLSearchParams({ token: TOKEN }), redirect: 'manual' });
      const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
      const { csrf } = await body(await fetch(`${locked.url}/dashboard/api/session`, { headers: { cookie } }));

      const forged = await post(locked.url, `api/jobs/${id}/retry`, {}, { cookie });
      expect(forged.status).to.equal(403);
      expect((await body(forged)).error).to.match(/CSRF/);
      expect((await post(locked.url, `api/jobs/${id}/retry`, {}, { cookie, 'x-sluice-csrf': 'guess' })).status).to.equal(403);
      // a form post (what another site can send without a preflight) is refused too
      const form = await fetch(`${locked.url}/dashboard/api/jobs/${id}/retry`, { method: 'POST', headers: { cookie, 'x-sluice-csrf': csrf, 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1' });
      expect(form.status).to.equal(415);
      expect(await status(pool, id)).to.equal('failed');

      const ok = await post(locked.url, `api/jobs/${id}/retry`, {}, { cookie, 'x-sluice-csrf': csrf });
      expect(ok.status).to.equal(200);
      expect(await body(ok)).to.deep.equal({ id, status: 'queued' });
      expect(await status(pool, id)).to.equal('queued');
    });

    it('acts on one job through the admin functions: retry, run-now, cancel, delete, with their state errors', async () => {
      const bearer = { authorization: `Bearer ${TOKEN}` };
      const id = await addFailed(pool, 'acts', 'boom');
      const act = async (action: string) => {
        const res = await post(locked.url, `api/jobs/${id}/${action}`, {}, bearer);
        return { status: res.status, body: await body(res) };
      };
      expect((await act('run-now')).status).to.equal(409);
      expect(await act('retry')).to.deep.equal({ status: 200, body: { id, status: 'queued' } });
      const again = await act('retry');
      expect(again.status).to.equal(409);
      expect(again.body.error).to.match(/queued.*run_job_now/);
      expect((await act('run-now')).status).to.equal(200);
      expect(await act('cancel')).to.deep.equal({ status: 200, body: { id, status: 'cancelled' } });
      await pool.query("UPDATE sluice.jobs SET status = 'running' WHERE id = $1", [id]);
      const running = await act('delete');
      expect(running.status).to.equal(409);
      expect(running.body.error).to.match(/running: cancel it first/);
      await pool.query("UPDATE sluice.jobs SET status = 'failed' WHERE id = $1", [id]);
      expect(await act('delete')).to.deep.equal({ status: 200, body: { id, status: 'failed' } });
      expect(await status(pool, id)).to.equal(undefined);
      expect((await act('delete')).status).to.equal(404);
      expect((await post(locked.url, 'api/jobs/abc/retry', {}, bearer)).status).to.equal(400);
    });

    it('pauses, resumes and limits a queue through the functions sluice queue uses, naming a bad limit', async () => {
      const bearer = { authorization: `Bearer ${TOKEN}` };
      const queueRow = async () => (await pool.query("SELECT paused, concurrency, rate_limit, rate_period FROM sluice.queues WHERE name = 'ctl'")).rows[0];
      expect((await post(locked.url, 'api/queues/ctl/pause', {}, bearer)).status).to.equal(200);
      expect(await queueRow()).to.include({ paused: true });
      const limits = await post(locked.url, 'api/queues/ctl/limits', { concurrency: 3, keyConcurrency: null, rateLimit: 10, ratePeriodMs: 60_000 }, bearer);
      expect(limits.status).to.equal(200);
      expect(await queueRow()).to.include({ paused: true, concurrency: 3, rate_limit: 10 });
      const overview = await body(await fetch(`${locked.url}/dashboard/api/overview`, { headers: bearer }));
      expect(overview.queues.find((q: { queue: string }) => q.queue === 'ctl')).to.deep.include({
        paused: true,
        limits: { concurrency: 3, keyConcurrency: null, rateLimit: 10, ratePeriodMs: 60_000 },
      });
      const bad = await post(locked.url, 'api/queues/ctl/limits', { concurrency: 0 }, bearer);
      expect(bad.status).to.equal(400);
      expect((await body(bad)).error).to.match(/concurrency must be an integer >= 1/);
      expect((await post(locked.url, 'api/queues/ctl/limits', { concurrency: 'many' }, bearer)).status).to.equal(400);
      expect((await post(locked.url, 'api/queues/ctl/resume', {}, bearer)).status).to.equal(200);
      expect(await queueRow()).to.include({ paused: false, concurrency: 3 });
      expect((await post(locked.url, 'api/queues/ctl/explode', {}, bearer)).status).to.equal(400);
    });

    it('bulk actions apply to every job matching the filter, and need a state the action applies to', async () => {
      const bearer = { authorization: `Bearer ${TOKEN}` };
      const ids = [];
      for (let i = 0; i < 5; i++) ids.push(await addFailed(pool, 'bulk', `disk full ${i}`, { queue: 'bulk-q' }));
      const other = await addFailed(pool, 'bulk', 'network down', { queue: 'bulk-q' });
      const refused = await post(locked.url, 'api/jobs/bulk', { action: 'retry', filter: { queue: 'bulk-q' } }, bearer);
      expect(refused.status).to.equal(400);
      expect((await body(refused)).error).to.match(/state filter/);
      const res = await post(locked.url, 'api/jobs/bulk', { action: 'retry', filter: { queue: 'bulk-q', state: 'failed', error: 'DISK' } }, bearer);
      expect(res.status).to.equal(200);
      expect(await body(res)).to.deep.equal({ done: 5, skipped: 0, next: null });
      for (const id of ids) expect(await status(pool, id)).to.equal('queued');
      expect(await status(pool, other)).to.equal('failed');
    });
  });

  describe('job list and detail', () => {
    const get = async (path: string) => {
      const res = await fetch(`${open.url}/dashboard/api/${path}`);
      return { status: res.status, body: await body(res) };
    };

    it('pages newest first by keyset without gaps or repeats, with every filter', async () => {
      await pool.query(
        `INSERT INTO sluice.jobs (task, queue, status, job_key, last_error)
         SELECT CASE WHEN g % 3 = 0 THEN 'resize' ELSE 'mail' END, 'pages', CASE WHEN g % 2 = 0 THEN 'failed' ELSE 'completed' END,
                'k' || g, CASE WHEN g % 2 = 0 THEN 'error 100% of ' || g END
         FROM generate_series(1, 230) g`,
      );
      const all = (await pool.query("SELECT id FROM sluice.jobs WHERE queue = 'pages' ORDER BY id DESC")).rows.map((r) => String(r.id));
      const seen: string[] = [];
      let before = '';
      for (let i = 0; i < 10; i++) {
        const { body } = await get(`jobs?queue=pages&limit=50${before ? `&before=${before}` : ''}`);
        seen.push(...body.jobs.map((j: { id: string }) => j.id));
        if (!body.next) break;
        before = body.next;
      }
      expect(seen).to.deep.equal(all);

      const failedResize = (await get('jobs?queue=pages&state=failed&task=resize&limit=500')).body.jobs;
      expect(failedResize).to.have.length(38);
      expect(failedResize.every((j: { task: string; status: string }) => j.task === 'resize' && j.status === 'failed')).to.equal(true);
      expect((await get('jobs?key=k17')).body.jobs.map((j: { jobKey: string }) => j.jobKey)).to.deep.equal(['k17']);
      // % and _ in the error text are literal, not patterns
      expect((await get('jobs?queue=pages&error=100%25%20of%2012&limit=500')).body.jobs.map((j: { lastError: string }) => j.lastError).sort()).to.deep.equal([
        'error 100% of 12',
        'error 100% of 120',
        'error 100% of 122',
        'error 100% of 124',
        'error 100% of 126',
        'error 100% of 128',
      ]);
      expect((await get('jobs?error=100_%25')).body.jobs).to.have.length(0);
      expect((await get('jobs?state=lost')).status).to.equal(400);
      expect((await get('jobs?before=x')).status).to.equal(400);
    });

    it('shows a job with payload, result and every recorded attempt with its error and timings', async () => {
      const id = await addFailed(pool, 'detail', 'second failure\n    at stack', { payload: { order: 7 } });
      const { status: code, body } = await get(`jobs/${id}`);
      expect(code).to.equal(200);
      expect(body.payload).to.deep.equal({ order: 7 });
      expect(body.attemptList.map((a: { attempt: number; outcome: string; error: string }) => [a.attempt, a.outcome, a.error])).to.deep.equal([
        [1, 'retried', 'first'],
        [2, 'failed', 'second failure\n    at stack'],
      ]);
      expect(body.attemptList[1].startedAt).to.be.a('string');
      expect(body.attemptList[1].endedAt).to.be.a('string');
      expect((await get('jobs/999999999')).status).to.equal(404);
    });

    it('the overview counts queued and running jobs per queue and the last hour of finished ones', async () => {
      await pool.query("SELECT sluice.add_job('count-me', queue => 'ov') FROM generate_series(1, 3)");
      await pool.query("SELECT sluice.add_job('later', queue => 'ov', run_at => now() + interval '1 hour')");
      await pool.query("INSERT INTO sluice.jobs (task, queue, status, finished_at) VALUES ('x', 'ov', 'completed', now()), ('x', 'ov', 'failed', now()), ('x', 'ov', 'completed', now() - interval '2 hours')");
      const { body } = await get('overview');
      const q = body.queues.find((x: { queue: string }) => x.queue === 'ov');
      expect(q).to.include({ runnable: 3, scheduled: 1, running: 0, completed: 1, failed: 1, cancelled: 0 });
      expect(q.series.minutes).to.have.length(60);
      expect(q.series.completed.reduce((a: number, b: number) => a + b, 0)).to.equal(1);
    });
  });

  describe('sluice delete', () => {
    it('deletes a job that is not running, and refuses a running one naming what to do', async () => {
      const id = await addFailed(pool, 'cli-delete', 'boom');
      const done = await runCli(['delete', id, '--json'], { env: { DATABASE_URL: url } });
      expect(done.code, done.stderr).to.equal(0);
      expect(JSON.parse(done.stdout)).to.deep.equal({ id, status: 'failed' });
      expect(await status(pool, id)).to.equal(undefined);
      const running = (await pool.query("INSERT INTO sluice.jobs (task, status, locked_by) VALUES ('busy', 'running', 'w') RETURNING id")).rows[0].id as string;
      const refused = await runCli(['delete', String(running)], { env: { DATABASE_URL: url } });
      expect(refused.code).to.equal(1);
      expect(refused.stderr).to.match(/job \d+ is running: cancel it first/);
      expect(await status(pool, String(running))).to.equal('running');
    });
  });

  describe('recurring jobs', () => {
    it('lists each configured entry with its next tick and its last recorded tick and job', async () => {
      const tick = '2026-12-01T02:00:00.000Z';
      const job = (await pool.query("SELECT sluice.enqueue_cron('nightly-report', $1, 'report', '{}', 'reports', 0, 25) AS id", [tick])).rows[0].id as string;
      const list = await body(await fetch(`${open.url}/dashboard/api/cron`));
      expect(list.map((c: { name: string }) => c.name)).to.deep.equal(['nightly-report', 'never-ticked']);
      expect(list[0]).to.include({ schedule: '0 3 * * *', timezone: 'Europe/Berlin', task: 'report', lastTick: tick, lastJobId: String(job), lastJobStatus: 'queued' });
      // 03:00 in Berlin is 02:00 UTC in winter
      expect(list[0].nextTick).to.match(/T02:00:00\.000Z$/);
      expect(new Date(list[0].nextTick).getTime()).to.be.above(Date.now());
      expect(list[1]).to.include({ lastTick: null, lastJobId: null, timezone: 'UTC' });
    });
  });

  describe('database health', () => {
    it('names the session that holds the xmin horizon, with a warning past the threshold', async () => {
      const holder = new pg.Client({ connectionString: url, application_name: 'nightly-report' });
      await holder.connect();
      try {
        await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
        const pid = (await holder.query('SELECT pg_backend_pid() AS pid, txid_current()')).rows[0].pid as number;
        const res = await fetch(`${open.url}/dashboard/api/health`);
        expect(res.status).to.equal(200);
        const health = await body(res);
        expect(health.xmin).to.include({ pid, applicationName: 'nightly-report', state: 'idle in transaction' });
        expect(health.warnings.join('\n')).to.match(new RegExp(`xmin held .* by pid ${pid} \\(nightly-report, idle in transaction\\)`));
        expect(health.connections.max).to.be.above(0);
      } finally {
        await holder.query('ROLLBACK').catch(() => undefined);
        await holder.end();
      }
    });
  });

  describe('where it is served', () => {
    it('sluice dashboard refuses a non-loopback host without a token', async () => {
      const r = await runCli(['dashboard', '--host', '0.0.0.0', '--port', '0'], { env: { DATABASE_URL: url } });
      expect(r.code).to.equal(2);
      expect(r.stderr).to.match(/not a loopback address and http\.dashboardToken \(SLUICE_DASHBOARD_TOKEN\) is empty/);
    });

    it('sluice start on a non-loopback host without a token serves no dashboard, the other endpoints still', async () => {
      const cli = startCli(['start', '--tasks', 'examples/tasks'], { env: { DATABASE_URL: url, SLUICE_HTTP_HOST: '0.0.0.0', SLUICE_HTTP_PORT: '0' } });
      const base = await cli.httpUrl();
      expect((await fetch(`${base}/dashboard/`)).status).to.equal(404);
      expect((await fetch(`${base}/dashboard/api/overview`)).status).to.equal(404);
      expect((await fetch(`${base}/healthz`)).status).to.equal(200);
      expect(cli.logs.some((l) => /dashboard is not served on http\.host 0\.0\.0\.0/.test(l.msg))).to.equal(true);
      cli.signal('SIGTERM');
      expect((await cli.exited).code).to.equal(0);
    });

    it('sluice start serves the dashboard with the token on a public address, through the worker pool', async () => {
      const cli = startCli(['start', '--tasks', 'examples/tasks'], {
        env: { DATABASE_URL: url, SLUICE_HTTP_HOST: '0.0.0.0', SLUICE_HTTP_PORT: '0', SLUICE_DASHBOARD_TOKEN: TOKEN },
      });
      const base = await cli.httpUrl();
      expect((await fetch(`${base}/dashboard/api/workers`)).status).to.equal(401);
      const workers = await waitFor('the worker to be listed', async () => {
        const res = await fetch(`${base}/dashboard/api/workers`, { headers: { authorization: `Bearer ${TOKEN}` } });
        const list = (await body(res)) as { alive: boolean }[];
        return list.some((w) => w.alive) ? list : undefined;
      });
      expect(workers!.length).to.be.above(0);
      cli.signal('SIGTERM');
      expect((await cli.exited).code).to.equal(0);
    });

    it('sluice dashboard serves on its own with at most 2 connections, however many requests come at once', async () => {
      const cli = startCli(['dashboard', '--port', '0'], { env: { DATABASE_URL: url } });
      const line = await cli.waitForLog('the dashboard to be announced', (l) => typeof l.dashboard === 'string');
      const base = line.dashboard as string;
      let most = 0;
      for (let round = 0; round < 5; round++) {
        const burst = Array.from({ length: 30 }, (_, i) => fetch(`${base}api/${['overview', 'jobs', 'workers', 'budget'][i % 4]}`).then((r) => r.status));
        const sessions = (await pool.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'sluice-dashboard'")).rows[0].n as number;
        most = Math.max(most, sessions);
        expect(await Promise.all(burst)).to.satisfy((s: number[]) => s.every((x) => x === 200));
      }
      const after = (await pool.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'sluice-dashboard'")).rows[0].n as number;
      expect(Math.max(most, after)).to.be.within(1, 2);
      expect((await fetch(`${base}api/jobs/1/retry`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status).to.equal(403);
      cli.signal('SIGTERM');
      expect((await cli.exited).code).to.equal(0);
    });
  });
});
