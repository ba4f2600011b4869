// The dashboard in a real browser (Debian's Chromium through playwright-core) against a running
// worker: log in, see the overview change live, filter jobs, open a failed job and retry it, and
// payloads, task names and errors full of markup rendered as text, with no script run.
import { expect } from 'chai';
import type { Browser, Page } from 'playwright-core';
import pg from 'pg';
import { Registry } from 'prom-client';
import { createDashboard } from '../src/dashboard/index.js';
import { startHttpServer, type HttpServer } from '../src/http/server.js';
import { silentLogger } from '../src/observe/logger.js';
import type { Worker } from '../src/worker/worker.js';
import { CHROMIUM_BIN, launchChromium } from './support/browser.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { requireTool } from './support/tools.js';
import { migrated, startWorker, stopWorkers } from './support/worker.js';

const TOKEN = 'browser-test-token';
const CRON: never[] = [];
const XSS_TASK = '<img src=x onerror="window.__xss=1">';
const XSS_PAYLOAD = { note: '<script>window.__xss=2</script>', pic: '<img src=x onerror="window.__xss=3">' };
const XSS_ERROR = 'bad <img src=x onerror="window.__xss=4"> <script>window.__xss=5</script>';

describe('dashboard in Chromium', function () {
  this.timeout(120_000);
  let browser: Browser;
  let pool: pg.Pool;
  let worker: Worker;
  let http: HttpServer;
  let page: Page;
  let flakyFails = true;

  before(async function () {
    requireTool(this, 'chromium', CHROMIUM_BIN);
    const url = await createTestDatabase();
    pool = await migrated(url, 2);
    worker = await startWorker(url, {
      ok: async () => ({ fine: true }),
      flaky: async () => {
        if (flakyFails) throw new Error('flaky: upstream said no');
        return { recovered: true };
      },
    }, { worker: { queues: ['default', 'other'] } });
    const dashboard = createDashboard({ pool: () => worker.db, schema: 'sluice', token: TOKEN, rescueAfterMs: 15_000, health: { xminAgeWarnMs: 60_000, deadRowsWarn: 100_000, notifyQueueWarn: 0.5 }, cron: CRON, log: silentLogger() });
    http = await startHttpServer({ ready: true, state: 'running', metrics: { registry: new Registry() } }, { host: '127.0.0.1', port: 0, dashboard });
    browser = await launchChromium();
    page = await browser.newPage();
    // a script that runs from the data would set window.__xss; a blocked one reports a CSP violation
    await page.addInitScript({
      content: "window.__violations = []; document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective));",
    });
  });
  after(async () => {
    await browser?.close();
    await http?.close();
    await stopWorkers();
    await pool?.end();
  });

  it('logs in with the token (a wrong one is refused)', async () => {
    await page.goto(`${http.url}/dashboard/`);
    await page.fill('#token', 'not the token');
    await page.click('button[type=submit]');
    await page.getByRole('alert').filter({ hasText: 'Wrong token' }).waitFor();
    await page.fill('#token', TOKEN);
    await page.click('button[type=submit]');
    await page.getByRole('button', { name: 'Log out' }).waitFor();
    const cookies = await page.context().cookies();
    expect(cookies.find((c) => c.name === 'sluice_dashboard')).to.include({ httpOnly: true, sameSite: 'Strict' });
  });

  it('the overview counts change live when jobs are added from SQL', async () => {
    await pool.query("SELECT sluice.add_job('ok', queue => 'reports')");
    await page.goto(`${http.url}/dashboard/#/`);
    const runnable = page.locator('section[data-queue="reports"] [data-testid=runnable]');
    await expect(await runnable.textContent({ timeout: 10_000 })).to.equal('1');
    // nobody takes queue "reports": the jobs stay runnable and the page must show 4 without a reload
    await pool.query("SELECT sluice.add_job('ok', queue => 'reports') FROM generate_series(1, 3)");
    await waitFor('the overview to show 4 runnable jobs', async () => (await runnable.textContent()) === '4', 15_000);
    // and jobs the worker completes show up in the last hour's count
    await pool.query("SELECT sluice.add_job('ok') FROM generate_series(1, 2)");
    const completed = page.locator('section[data-queue="default"] [data-testid=completed]');
    await waitFor('the overview to count 2 completed jobs', async () => (await completed.textContent()) === '2', 15_000);
    expect(await page.locator('section[data-queue="default"] .chart canvas').count()).to.be.above(0);
  });

  it('filters jobs, opens a failed job and retries it', async () => {
    await pool.query("SELECT sluice.add_job('flaky', max_attempts => 1)");
    await waitFor('the flaky job to fail', async () => (await pool.query("SELECT 1 FROM sluice.jobs WHERE task = 'flaky' AND status = 'failed'")).rowCount === 1);
    await page.goto(`${http.url}/dashboard/#/jobs`);
    await page.selectOption('select[name=state]', 'failed');
    await page.fill('input[name=task]', 'flaky');
    await page.click('button:has-text("Filter")');
    await page.waitForFunction("location.hash.includes('state=failed')");
    const rows = page.locator('table.jobs tbody tr');
    await waitFor('one failed flaky job listed', async () => (await rows.count()) === 1);
    expect(await rows.locator('.state').textContent()).to.equal('failed');
    expect(await rows.locator('.last-error').textContent()).to.equal('Error: flaky: upstream said no');

    await rows.locator('a').click();
    const state = page.locator('[data-testid=job-state]');
    await waitFor('the job page', async () => (await state.textContent()) === 'failed');
    expect(await page.locator('table.attempts tbody tr').count()).to.equal(1);
    flakyFails = false;
    await page.click('[data-testid=action-retry]');
    await page.getByRole('status').filter({ hasText: 'is queued' }).waitFor();
    // the worker runs it again; the page follows without a reload
    await waitFor('the retried job to complete', async () => (await state.textContent()) === 'completed', 15_000);
    expect(await page.locator('table.attempts tbody tr').count()).to.equal(2);
  });

  it('pauses and resumes a queue: no job of it starts while paused', async () => {
    await page.goto(`${http.url}/dashboard/#/`);
    const card = page.locator('section[data-queue="default"]');
    await card.locator('[data-testid=pause]').click();
    await card.locator('[data-testid=paused]').waitFor();
    const before = Number(await card.locator('[data-testid=completed]').textContent());
    await pool.query("SELECT sluice.add_job('ok', payload => '{\"held\": true}')");
    // the worker still runs another queue's job; the paused queue's job stays runnable meanwhile
    await pool.query("SELECT sluice.add_job('ok', queue => 'other')");
    await waitFor('the other queue\'s job to complete', async () => (await pool.query("SELECT 1 FROM sluice.jobs WHERE queue = 'other' AND status = 'completed'")).rowCount === 1);
    await waitFor('the overview to show the held job', async () => (await card.locator('[data-testid=runnable]').textContent()) === '1');
    expect((await pool.query("SELECT status FROM sluice.jobs WHERE payload->>'held' = 'true'")).rows[0].status).to.equal('queued');

    await card.locator('[data-testid=resume]').click();
    await card.locator('[data-testid=pause]').waitFor();
    expect(await card.locator('[data-testid=paused]').count()).to.equal(0);
    await waitFor('the held job to run after the resume', async () => (await card.locator('[data-testid=completed]').textContent()) === String(before + 1), 15_000);
    expect(await card.locator('[data-testid=runnable]').textContent()).to.equal('0');
    expect((await pool.query("SELECT status FROM sluice.jobs WHERE payload->>'held' = 'true'")).rows[0].status).to.equal('completed');
  });

  it('edits the limits of a queue', async () => {
    await page.goto(`${http.url}/dashboard/#/`);
    const card = page.locator('section[data-queue="default"]');
    await card.locator('[data-testid=edit-limits]').click();
    await card.locator('input[name=concurrency]').fill('7');
    await card.locator('input[name=rateLimit]').fill('100');
    await card.locator('[data-testid=save-limits]').click();
    await waitFor('the limits to show', async () => (await card.locator('[data-testid=limits]').textContent()) === 'at most 7 running, 100 starts per 1.0 s');
    expect((await pool.query("SELECT concurrency, rate_limit FROM sluice.queues WHERE name = 'default'")).rows[0]).to.deep.equal({ concurrency: 7, rate_limit: 100 });
  });

  it('renders markup in task names, payloads and errors as text, and runs none of it', async () => {
    const { rows } = await pool.query(
      `INSERT INTO sluice.jobs (task, queue, payload, status, attempts, last_error, errors, finished_at)
       VALUES ($1, 'xss', $2, 'failed', 1, $3, jsonb_build_array(jsonb_build_object('attempt', 1, 'at', now(), 'error', $3::text)), now()) RETURNING id`,
      [XSS_TASK, JSON.stringify(XSS_PAYLOAD), XSS_ERROR],
    );
    const id = String(rows[0].id);
    // no element was made from the data, no script ran, and none was even attempted (CSP would report it)
    const inert = async (where: string) => {
      expect(await page.locator('main img, main script').count(), where).to.equal(0);
      expect(await page.evaluate('window.__xss'), where).to.equal(undefined);
      expect(await page.evaluate('window.__violations'), where).to.deep.equal([]);
    };
    await page.goto(`${http.url}/dashboard/#/jobs?queue=xss`);
    await page.locator('table.jobs tbody tr').first().waitFor();
    expect(await page.locator('table.jobs td.task').first().textContent()).to.equal(XSS_TASK);
    expect(await page.locator('table.jobs td.last-error').first().textContent()).to.equal(XSS_ERROR);
    await inert('job list');
    await page.goto(`${http.url}/dashboard/#/jobs/${id}`);
    await page.locator('[data-testid=job-payload]').waitFor();
    expect(await page.locator('[data-testid=job-task]').textContent()).to.equal(XSS_TASK);
    expect(JSON.parse((await page.locator('[data-testid=job-payload]').textContent())!)).to.deep.equal(XSS_PAYLOAD);
    expect(await page.locator('[data-testid=job-last-error]').textContent()).to.equal(XSS_ERROR);
    expect(await page.locator('table.attempts pre').first().textContent()).to.equal(XSS_ERROR);
    await inert('job detail');
    await page.goto(`${http.url}/dashboard/#/`);
    await page.locator('section[data-queue="xss"]').waitFor();
    await inert('overview');
  });
});
