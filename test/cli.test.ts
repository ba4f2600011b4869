// The `sluice` command line, run for real as a child process against real PostgreSQL: every
// command, its errors and exit codes, its --json output, the daemon's HTTP endpoints and graceful
// shutdown, and the zero-setup start on an embedded PostgreSQL.
import { expect } from 'chai';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { checkBudget, type Budget } from '../src/admin/budget.js';
import { expectedVersion } from '../src/db/migrate.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { startWorker, stopWorkers } from './support/worker.js';
import {
  killAllCli,
  killPostmaster,
  metricSum,
  postmasterPid,
  processAlive,
  runCli,
  runJson,
  startCli,
  type CliResult,
} from './support/cli.js';

function tempDir(prefix: string): string {
  // enterable by the "postgres" user, which runs the embedded server when the tests run as root
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

/** One line on stderr, starting "sluice: ", without a stack trace. */
function expectOneErrorLine(r: CliResult, pattern: RegExp): void {
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).to.have.lengthOf(1);
  expect(lines[0]).to.match(/^sluice: /);
  expect(lines[0]).to.match(pattern);
  expect(r.stderr).not.to.match(/\n\s+at /);
}

describe('sluice CLI', function () {
  this.timeout(120_000);
  let url: string;
  let pool: pg.Pool;
  let env: Record<string, string>;

  before(async () => {
    url = await createTestDatabase();
    pool = new pg.Pool({ connectionString: url, max: 2 });
    env = { DATABASE_URL: url };
  });
  after(async () => {
    await killAllCli();
    await stopWorkers();
    await pool.end();
  });

  const row = async (id: string) => (await pool.query('SELECT * FROM sluice.jobs WHERE id = $1', [id])).rows[0];

  describe('help and usage', () => {
    it('documents every command with --help: --config, the exit codes, and --json where it prints data', async () => {
      const commands = [
        ['start'], ['migrate'], ['add'], ['status'], ['jobs'], ['show'], ['retry'], ['cancel'], ['budget'], ['config', 'check'],
        ['queue', 'list'], ['queue', 'limit'], ['queue', 'pause'], ['queue', 'resume'], ['cron', 'list'],
      ];
      // a few at a time: each is a Node process compiling TypeScript
      const results: CliResult[] = [];
      const all = [['--help'], ...commands.map((c) => [...c, '--help'])];
      for (let i = 0; i < all.length; i += 4) results.push(...(await Promise.all(all.slice(i, i + 4).map((args) => runCli(args)))));
      const [top, ...rest] = results;
      expect(top!.code).to.equal(0);
      expect(top!.stdout).to.include('Exit codes:');
      for (const c of commands) expect(top!.stdout).to.include(`  ${c[0]}`);
      rest.forEach((r, i) => {
        const name = commands[i]!.join(' ');
        expect(r.code, name).to.equal(0);
        expect(r.stdout, name).to.include('--config <file>');
        expect(r.stdout, name).to.match(/Exit codes:\n\s+0 {2}success\n\s+1 {2}operational failure.*\n\s+2 {2}usage or validation error/);
        if (name !== 'start') expect(r.stdout, name).to.include('--json');
      });
    });

    it('exits 2 with one clear line for an unknown command, an unknown flag, a missing argument or a bad number', async () => {
      const [cmd, flag, missing, number, choice] = await Promise.all([
        runCli(['frobnicate'], { env }),
        runCli(['status', '--frob'], { env }),
        runCli(['show'], { env }),
        runCli(['add', 'hello', '--priority', 'high'], { env }),
        runCli(['jobs', '--status', 'done'], { env }),
      ]);
      expect(cmd.code).to.equal(2);
      expectOneErrorLine(cmd, /unknown command 'frobnicate'/);
      expect(flag.code).to.equal(2);
      expectOneErrorLine(flag, /unknown option '--frob'/);
      expect(missing.code).to.equal(2);
      expectOneErrorLine(missing, /missing required argument 'id'/);
      expect(number.code).to.equal(2);
      expectOneErrorLine(number, /--priority must be an integer/);
      expect(choice.code).to.equal(2);
      expectOneErrorLine(choice, /Allowed choices are queued, running, completed, failed, cancelled/);
    });
  });

  describe('migrate', () => {
    it('tells to migrate an empty database (exit 1), then migrates it once', async () => {
      const before = await runCli(['status'], { env });
      expect(before.code).to.equal(1);
      expectOneErrorLine(before, /sluice is not installed in schema "sluice".*run "sluice migrate"/);

      const first = await runCli(['migrate'], { env });
      expect(first.code, first.stderr).to.equal(0);
      const version = expectedVersion('sluice');
      const all = Array.from({ length: version }, (_, i) => i + 1).join(', ');
      expect(first.stdout.trim()).to.equal(`applied migration${version > 1 ? 's' : ''} ${all}: schema "sluice" is at version ${version}`);
      const again = await runJson(['migrate'], { env });
      expect(again).to.deep.equal({ schema: 'sluice', applied: [], version });
    });
  });

  describe('add', () => {
    it('enqueues a job and prints its id; the flags reach the row', async () => {
      const r = await runCli(
        ['add', 'hello', '--payload', '{"name":"world"}', '--queue', 'mail', '--priority', '3', '--max-attempts', '2', '--run-at', '2031-01-02T03:04:05Z', '--key', 'k1'],
        { env },
      );
      expect(r.code, r.stderr).to.equal(0);
      const id = r.stdout.trim();
      expect(id).to.match(/^\d+$/);
      const job = await row(id);
      expect(job).to.include({ task: 'hello', queue: 'mail', priority: 3, max_attempts: 2, job_key: 'k1', status: 'queued' });
      expect(job.payload).to.deep.equal({ name: 'world' });
      expect(job.run_at.toISOString()).to.equal('2031-01-02T03:04:05.000Z');

      // --json, and a duplicate key gets the holder's id
      const dup = await runJson(['add', 'hello', '--key', 'k1'], { env });
      expect(dup).to.deep.equal({ id });
    });

    it('exits 2 for a payload that is not JSON or not an object, a bad date, or an invalid job', async () => {
      const [notJson, array, date, emptyTask] = await Promise.all([
        runCli(['add', 'hello', '--payload', '{name: world}'], { env }),
        runCli(['add', 'hello', '--payload', '[1,2]'], { env }),
        runCli(['add', 'hello', '--run-at', 'next tuesday'], { env }),
        runCli(['add', ' '], { env }),
      ]);
      expect(notJson.code).to.equal(2);
      expectOneErrorLine(notJson, /--payload is not valid JSON/);
      expect(array.code).to.equal(2);
      expectOneErrorLine(array, /--payload must be a JSON object, got an array/);
      expect(date.code).to.equal(2);
      expectOneErrorLine(date, /--run-at is not a valid date/);
      expect(emptyTask.code).to.equal(2);
      expectOneErrorLine(emptyTask, /task must be a non-empty name/);
    });
  });

  describe('jobs, show, retry, cancel', () => {
    let ids: string[];

    before(async () => {
      await pool.query('TRUNCATE sluice.jobs');
      ids = [];
      for (const [task, queue] of [['a', 'q1'], ['b', 'q1'], ['a', 'q2']] as const) {
        ids.push((await runJson<{ id: string }>(['add', task, '--queue', queue], { env })).id);
      }
      // the first job failed twice and for good; the second completed
      await pool.query(
        `UPDATE sluice.jobs SET status = 'failed', attempts = 2, max_attempts = 2, finished_at = now(),
           last_error = E'Error: boom 2\\n    at handler (a.js:1:1)',
           errors = '[{"attempt":1,"at":"2030-01-01T00:00:00Z","error":"Error: boom 1"},{"attempt":2,"at":"2030-01-01T00:00:05Z","error":"Error: boom 2"}]'
         WHERE id = $1`,
        [ids[0]],
      );
      await pool.query(`UPDATE sluice.jobs SET status = 'completed', attempts = 1, finished_at = now(), result = '{"ok":true}' WHERE id = $1`, [ids[1]]);
    });

    it('lists jobs newest first, filtered, as a table or JSON', async () => {
      const all = await runJson<{ id: string; task: string; status: string }[]>(['jobs'], { env });
      expect(all.map((j) => j.id)).to.deep.equal([...ids].reverse());
      expect(all[0]).to.have.keys(
        'id', 'queue', 'task', 'status', 'priority', 'runAt', 'attempts', 'maxAttempts', 'jobKey', 'lockedBy', 'lastError', 'createdAt', 'startedAt', 'finishedAt',
      );
      expect(all[2]).to.include({ status: 'failed', lastError: 'Error: boom 2' });

      expect((await runJson<{ id: string }[]>(['jobs', '--queue', 'q1'], { env })).map((j) => j.id)).to.deep.equal([ids[1], ids[0]]);
      expect((await runJson<{ id: string }[]>(['jobs', '--task', 'a', '--status', 'queued'], { env })).map((j) => j.id)).to.deep.equal([ids[2]]);
      expect(await runJson(['jobs', '--limit', '1'], { env })).to.have.lengthOf(1);

      const table = await runCli(['jobs'], { env });
      expect(table.code).to.equal(0);
      const lines = table.stdout.trim().split('\n');
      expect(lines[0]).to.match(/^ID\s+QUEUE\s+TASK\s+STATUS\s+ATTEMPTS/);
      expect(lines).to.have.lengthOf(4);
      expect(lines[3]).to.match(new RegExp(`^${ids[0]}\\s+q1\\s+a\\s+failed\\s+2/2 .*Error: boom 2$`));
    });

    it('shows one job with its payload, errors and result', async () => {
      const failed = await runJson(['show', ids[0]!], { env });
      expect(failed).to.include({ id: ids[0], task: 'a', queue: 'q1', status: 'failed', attempts: 2, maxAttempts: 2 });
      expect(failed.payload).to.deep.equal({});
      expect(failed.errors.map((e: { attempt: number; error: string }) => [e.attempt, e.error])).to.deep.equal([
        [1, 'Error: boom 1'],
        [2, 'Error: boom 2'],
      ]);
      expect(failed.lastError).to.match(/^Error: boom 2\n\s+at handler/);

      const done = await runJson(['show', ids[1]!], { env });
      expect(done.result).to.deep.equal({ ok: true });

      const text = await runCli(['show', ids[0]!], { env });
      expect(text.code).to.equal(0);
      expect(text.stdout).to.match(/status\s+failed/);
      expect(text.stdout).to.include('attempt 1 at 2030-01-01');
      expect(text.stdout).to.include('last error:');
    });

    it('retries a failed job and cancels a queued one', async () => {
      expect(await runJson(['retry', ids[0]!], { env })).to.deep.equal({ id: ids[0], status: 'queued' });
      const retried = await row(ids[0]!);
      expect(retried.status).to.equal('queued');
      expect(retried.max_attempts).to.equal(3);

      // a queued job keeps its run_at: retry refuses it and says what to run instead
      const later = (await pool.query(`SELECT sluice.add_job('later', run_at => '2031-01-01T00:00:00Z') AS id`)).rows[0].id;
      const refused = await runCli(['retry', String(later)], { env });
      expect(refused.code).to.equal(1);
      expectOneErrorLine(refused, /job \d+ is queued \(to run at 2031-01-01.*\): retry is for failed, cancelled or completed jobs; .*sluice run-now \d+/);
      expect((await row(String(later))).run_at.toISOString()).to.equal('2031-01-01T00:00:00.000Z');
      expect(await runJson(['run-now', String(later)], { env })).to.deep.equal({ id: String(later), status: 'queued' });
      expect((await row(String(later))).run_at.getTime()).to.be.at.most(Date.now() + 1000);
      const notQueued = await runCli(['run-now', ids[1]!], { env });
      expect(notQueued.code).to.equal(1);
      expectOneErrorLine(notQueued, /job \d+ is completed: run_job_now is for queued jobs; .*sluice retry \d+/);

      const text = await runCli(['cancel', ids[2]!], { env });
      expect(text.code, text.stderr).to.equal(0);
      expect(text.stdout.trim()).to.equal(`job ${ids[2]} cancelled`);
      expect((await row(ids[2]!)).status).to.equal('cancelled');
    });

    it('exits 1 for a job that does not exist or is in the wrong state, 2 for an id that is no id', async () => {
      const [show, retry, cancel, finished, running, notAnId] = await Promise.all([
        runCli(['show', '987654321'], { env }),
        runCli(['retry', '987654321'], { env }),
        runCli(['cancel', '987654321', '--json'], { env }),
        runCli(['cancel', ids[1]!], { env }),
        (async () => {
          await pool.query(`UPDATE sluice.jobs SET status = 'running' WHERE id = $1`, [ids[2]]);
          return runCli(['retry', ids[2]!], { env });
        })(),
        runCli(['show', '12abc'], { env }),
      ]);
      for (const r of [show, retry, cancel]) {
        expect(r.code).to.equal(1);
        expectOneErrorLine(r, /^sluice: job 987654321 not found$/);
        expect(r.stdout).to.equal('');
      }
      expect(finished.code).to.equal(1);
      expectOneErrorLine(finished, /job \d+ is already completed: nothing to cancel/);
      expect(running.code).to.equal(1);
      expectOneErrorLine(running, /job \d+ is running: retry is for failed, cancelled or completed jobs; cancel it first/);
      expect(notAnId.code).to.equal(2);
      expectOneErrorLine(notAnId, /job id must be a positive integer, got "12abc"/);
    });
  });

  describe('queue and cron', () => {
    it('sets, lists, pauses and resumes queue limits across workers; lists recurring jobs', async () => {
      expect((await runCli(['migrate'], { env })).code).to.equal(0);
      const limit = await runCli(['queue', 'limit', 'emails', '--concurrency', '3', '--key-concurrency', '1', '--rate', '100/1m'], { env });
      expect(limit.code, limit.stderr).to.equal(0);
      expect(limit.stdout).to.include('queue emails: concurrency 3, key concurrency 1, rate 100/m');
      expect((await runCli(['queue', 'pause', 'emails'], { env })).code).to.equal(0);
      await runCli(['add', 'send', '--queue', 'emails', '--concurrency-key', 'customer-1'], { env });
      const listed = await runJson(['queue', 'list'], { env });
      expect(listed).to.deep.include({
        name: 'emails', concurrency: 3, keyConcurrency: 1, rateLimit: 100, ratePeriodMs: 60_000, paused: true, queued: 1, runnable: 1, running: 0,
        oldestRunnableAgeMs: listed.find((q: { name: string }) => q.name === 'emails').oldestRunnableAgeMs,
      });
      const key = await pool.query("SELECT concurrency_key FROM sluice.jobs WHERE queue = 'emails'");
      expect(key.rows[0].concurrency_key).to.equal('customer-1');
      expect((await runCli(['queue', 'resume', 'emails'], { env })).code).to.equal(0);
      // a limit left out is removed
      await runCli(['queue', 'limit', 'emails', '--concurrency', '5'], { env });
      const table = await runCli(['queue', 'list'], { env });
      expect(table.stdout).to.match(/emails\s+concurrency 5\s+no\s+1/);

      const [badRate, zero, blank] = await Promise.all([
        runCli(['queue', 'limit', 'emails', '--rate', '100/fortnight'], { env }),
        runCli(['queue', 'limit', 'emails', '--concurrency', '0'], { env }),
        runCli(['queue', 'pause', ' '], { env }),
      ]);
      for (const r of [badRate, zero, blank]) expect(r.code, r.stderr).to.equal(2);
      expectOneErrorLine(badRate, /--rate "100\/fortnight": give starts per duration/);
      expectOneErrorLine(zero, /--concurrency/);
      expectOneErrorLine(blank, /queue name must be non-blank/);

      const dir = tempDir('sluice-cron-cli-');
      const file = path.join(dir, 'cron.yaml');
      writeFileSync(file, 'cron:\n  - name: nightly\n    schedule: "0 3 * * *"\n    timezone: Europe/Berlin\n    task: report\n');
      const cron = await runJson(['cron', 'list', '--config', file], { env });
      expect(cron).to.have.length(1);
      expect(cron[0]).to.include({ name: 'nightly', schedule: '0 3 * * *', timezone: 'Europe/Berlin', task: 'report', lastTick: null });
      expect(new Date(cron[0].nextTick).getTime()).to.be.above(Date.now());
      writeFileSync(file, 'cron:\n  - name: nightly\n    schedule: "0 25 * * *"\n    task: report\n');
      const bad = await runCli(['cron', 'list', '--config', file], { env });
      expect(bad.code).to.equal(2);
      expectOneErrorLine(bad, /cron: entry 1 \(nightly\): schedule "0 25 \* \* \*" is not valid/);
      rmSync(dir, { recursive: true, force: true });
    });
  });

  describe('status and budget', () => {
    let statusUrl: string;
    let statusEnv: Record<string, string>;

    before(async () => {
      statusUrl = await createTestDatabase();
      statusEnv = { DATABASE_URL: statusUrl };
      expect((await runCli(['migrate'], { env: statusEnv })).code).to.equal(0);
      const p = new pg.Pool({ connectionString: statusUrl, max: 1 });
      // two runnable jobs in "reports" (the oldest due a minute ago), one scheduled, one completed in "mail"
      await p.query(`SELECT sluice.add_job('r', '{}', 'reports', now() - interval '60 seconds')`);
      await p.query(`SELECT sluice.add_job('r', '{}', 'reports')`);
      await p.query(`SELECT sluice.add_job('r', '{}', 'reports', now() + interval '1 hour')`);
      const mail = (await p.query(`SELECT sluice.add_job('m', '{}', 'mail') AS id`)).rows[0].id;
      await p.query(`UPDATE sluice.jobs SET status = 'completed', finished_at = now() WHERE id = $1`, [mail]);
      await p.end();
    });
    after(() => stopWorkers());

    it('shows jobs per queue and state, live workers with their heartbeat age, and the connection budget', async () => {
      const worker = await startWorker(statusUrl, { noop: async () => undefined }, { worker: { queues: ['elsewhere'] } });
      const status = await runJson(['status'], { env: statusEnv });
      expect(status).to.have.keys('queues', 'workers', 'unserved', 'unhandled', 'budget', 'health');
      // the only live worker takes 'elsewhere': the jobs waiting in 'reports' have nobody
      expect(status.unserved).to.deep.equal(['reports']);
      expect(status.queues).to.have.lengthOf(2);
      const [mail, reports] = status.queues;
      expect(mail).to.include({ queue: 'mail', runnable: 0, completed: 1, oldestRunnableSeconds: null });
      expect(reports).to.include({ queue: 'reports', runnable: 2, scheduled: 1, running: 0, completed: 0, failed: 0, cancelled: 0 });
      expect(reports.oldestRunnableSeconds).to.be.within(59, 600);

      expect(status.workers).to.have.lengthOf(1);
      expect(status.workers[0]).to.include({ id: worker.identity.id, alive: true, poolSize: 3, concurrency: 4, running: 0 });
      expect(status.workers[0].queues).to.deep.equal(['elsewhere']);
      expect(status.workers[0].heartbeatAgeSeconds).to.be.within(0, 10);
      expect(status.budget.sluice.map((w: { id: string }) => w.id)).to.deep.equal([worker.identity.id]);

      const text = await runCli(['status'], { env: statusEnv });
      expect(text.code).to.equal(0);
      expect(text.stdout).to.match(/^Queues\n\s+QUEUE\s+RUNNABLE\s+SCHEDULED\s+RUNNING\s+COMPLETED\s+FAILED\s+CANCELLED\s+OLDEST RUNNABLE\n/);
      expect(text.stdout).to.match(/reports\s+2\s+1\s+0\s+0\s+0\s+0\s+1m0\ds/);
      expect(text.stdout).to.include(worker.identity.id);
      expect(text.stdout).to.match(/\d+s ago\s+alive/);
      expect(text.stdout).to.match(/Queues no live worker takes .*\n\s+reports: 2 runnable, 1 scheduled\n/);
      expect(text.stdout).to.match(/Connections\n\s+max_connections \d+, reserved \d+, in use \d+ \(sluice \d+, others \d+, this command 1\), available \d+/);
    });

    it('prints database health: the session holding the xmin horizon, the jobs table, the notification queue, connections', async () => {
      const holder = new pg.Client({ connectionString: statusUrl, application_name: 'nightly-export' });
      await holder.connect();
      try {
        const pid = (await holder.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
        await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
        await holder.query('SELECT count(*) FROM sluice.jobs');
        const env = { ...statusEnv, SLUICE_HEALTH_XMIN_AGE_WARN_MS: '1' };
        const json = await runJson<{ health: { xmin: { pid: number; applicationName: string }; warnings: string[] } }>(['status'], { env });
        expect(json.health.xmin).to.include({ pid, applicationName: 'nightly-export' });
        const text = await runCli(['status'], { env });
        expect(text.code).to.equal(0);
        expect(text.stdout).to.match(new RegExp(`Database health\\n  xmin horizon: held \\d+ (ms|s) by pid ${pid} \\(nightly-export, idle in transaction\\) since \\d{4}-`));
        expect(text.stdout).to.match(/\n  jobs table: \d+ live rows, \d+ dead, [\d.]+ MB \+ [\d.]+ MB indexes; last vacuum /);
        expect(text.stdout).to.match(/\n  notification queue: [\d.]+% used\n  connections: \d+ of max_connections \d+ \(sluice \d+\)\n/);
        expect(text.stdout).to.match(new RegExp(`\\n  WARNING: xmin held \\d+ (ms|s) by pid ${pid} \\(nightly-export`));
      } finally {
        await holder.end();
      }
    });

    it('prints the connection budget: allowed, held by each sluice worker, held by others, and whether one more fits', async () => {
      const worker = await startWorker(statusUrl, { noop: async () => undefined }, { worker: { queues: ['elsewhere'] } });
      // the worker holds its listener and at least one pool connection
      await waitFor('the worker connections to show', async () => {
        const b = await runJson<Budget>(['budget'], { env: statusEnv });
        return b.sluice.find((w) => w.id === worker.identity.id)?.connected! >= 2;
      });
      const outsider = new pg.Client({ connectionString: statusUrl, application_name: 'someone-else' });
      await outsider.connect();
      try {
        const budget = await runJson<Budget & { check: { fits: boolean; needed: number; message: string; poolSize: number } }>(['budget'], {
          env: { ...statusEnv, SLUICE_POOL_SIZE: '6' },
        });
        // the server's own settings, read independently
        const settings = (await outsider.query(`SELECT current_setting('max_connections')::int AS max,
            current_setting('superuser_reserved_connections')::int
              + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0) AS reserved`)).rows[0];
        expect(budget.maxConnections).to.equal(settings.max);
        expect(budget.reservedConnections).to.equal(settings.reserved);
        expect(budget.usableConnections).to.equal(settings.max - settings.reserved);
        expect(budget.others).to.be.at.least(1);
        expect(budget.asking, 'the asking command itself').to.equal(1);
        expect(budget.inUse).to.equal(budget.others + budget.sluiceConnected + budget.asking);
        expect(budget.available).to.equal(budget.usableConnections - budget.inUse);
        const mine = budget.sluice.find((w) => w.id === worker.identity.id)!;
        expect(mine).to.include({ poolSize: 3, budget: 4 });
        expect(mine.connected).to.be.within(2, 4);
        expect(budget.check).to.include({ fits: true, needed: 7, poolSize: 6 });
        expect(budget.check.message).to.match(/^connection budget fits: this worker needs 7 connections/);

        const text = await runCli(['budget'], { env: statusEnv });
        expect(text.code).to.equal(0);
        expect(text.stdout).to.match(/^max_connections\s+\d+\n/);
        expect(text.stdout).to.match(/\n {2}others\s+\d+\n/);
        expect(text.stdout).to.match(new RegExp(`${worker.identity.id}\\s+\\S+\\s+\\d+\\s+3\\s+4\\s+\\d`));
        expect(text.stdout).to.include('one more worker with database.poolSize 4: connection budget fits');
      } finally {
        await outsider.end();
      }
    });

    it('checkBudget: fits, or says what is short and what to change', () => {
      const budget: Budget = {
        maxConnections: 20,
        reservedConnections: 3,
        usableConnections: 17,
        inUse: 9,
        sluice: [
          { id: 'w1', host: 'h', pid: 1, poolSize: 4, budget: 5, connected: 3, heartbeatAgeSeconds: 1 },
          { id: 'w2', host: 'h', pid: 2, poolSize: 2, budget: 3, connected: 2, heartbeatAgeSeconds: 1 },
        ],
        sluiceBudget: 8,
        sluiceConnected: 5,
        sluiceUnattributed: 0,
        others: 4,
        asking: 0,
        available: 8,
        schemaInstalled: true,
      };
      // 17 usable - 4 others - 8 budgeted = 5
      expect(checkBudget(budget, 4)).to.include({ fits: true, needed: 5, headroom: 5 });
      const no = checkBudget(budget, 5);
      expect(no).to.include({ fits: false, needed: 6, headroom: 5 });
      expect(no.message).to.equal(
        'connection budget exceeded: this worker needs 6 connections (database.poolSize 5 + 1 listener) but only 5 are left ' +
          '(max_connections 20 - reserved 3 - other clients 4 - 2 other sluice workers (budget 8) = 5); ' +
          'lower database.poolSize, run fewer workers, or raise max_connections',
      );
      // a registered worker checking itself is not counted twice
      expect(checkBudget(budget, 5, { ownId: 'w1' })).to.include({ fits: true, headroom: 10 });
    });
  });

  describe('config check', () => {
    let dir: string;
    before(() => {
      dir = tempDir('sluice-cli-config-');
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('prints the effective configuration with the password redacted', async () => {
      const file = path.join(dir, 'ok.yaml');
      writeFileSync(file, 'worker:\n  concurrency: 7\nhttp:\n  port: 9999\n');
      const secretEnv = { DATABASE_URL: 'postgres://app:hunter2@db.example:5432/app', SLUICE_QUEUES: 'a,b' };
      const text = await runCli(['config', 'check', '--config', file], { env: secretEnv });
      expect(text.code, text.stderr).to.equal(0);
      expect(text.stdout).to.include('url: postgres://app:***@db.example:5432/app');
      expect(text.stdout).to.match(/concurrency: 7/);
      expect(text.stderr).to.include('configuration is valid');

      const json = await runJson(['config', 'check'], { env: { ...secretEnv, SLUICE_CONFIG: file } });
      expect(json).to.have.keys('database', 'worker', 'health', 'http', 'cron', 'log');
      expect(json.database.url).to.equal('postgres://app:***@db.example:5432/app');
      expect(json.worker).to.include({ concurrency: 7 });
      expect(json.worker.queues).to.deep.equal(['a', 'b']);
      expect(json.http.port).to.equal(9999);
      expect(JSON.stringify(json) + text.stdout + text.stderr).not.to.include('hunter2');
    });

    it('exits 2 naming the key for an unknown key, a bad value, or an unreadable file', async () => {
      const unknown = path.join(dir, 'unknown.yaml');
      writeFileSync(unknown, 'worker:\n  concurency: 3\n');
      const [typo, badEnv, missing, rule, badUrl] = await Promise.all([
        runCli(['config', 'check', '--config', unknown]),
        runCli(['config', 'check'], { env: { SLUICE_CONCURRENCY: '0' } }),
        runCli(['config', 'check', '--config', path.join(dir, 'nope.yaml')]),
        runCli(['config', 'check'], { env: { SLUICE_HEARTBEAT_MS: '10000' } }),
        runCli(['status'], { env: { DATABASE_URL: 'mysql://root:hunter2@db/app' } }),
      ]);
      expect(typo.code).to.equal(2);
      expectOneErrorLine(typo, /worker\.concurency: unknown key/);
      expect(badEnv.code).to.equal(2);
      expectOneErrorLine(badEnv, /worker\.concurrency: must be an integer >= 1/);
      expect(missing.code).to.equal(2);
      expectOneErrorLine(missing, /config file .*nope\.yaml does not exist/);
      expect(rule.code).to.equal(2);
      expectOneErrorLine(rule, /worker\.heartbeatMs \(10000\) must be at most a third of worker\.rescueAfterMs/);
      expect(badUrl.code).to.equal(2);
      expectOneErrorLine(badUrl, /database\.url: must be a postgres:\/\//);
      expect(badUrl.stderr).not.to.include('hunter2');
    });
  });

  describe('database errors', () => {
    it('exits 1 with one line and no password when the database is unreachable', async () => {
      const r = await runCli(['jobs'], { env: { DATABASE_URL: 'postgres://app:hunter2@127.0.0.1:1/app', SLUICE_CONNECTION_TIMEOUT_MS: '3000' } });
      expect(r.code).to.equal(1);
      expectOneErrorLine(r, /^sluice: cannot connect to the database at postgres:\/\/app:\*\*\*@127\.0\.0\.1:1\/app: .*ECONNREFUSED/);
      expect(r.stderr).not.to.include('hunter2');
    });

    it('exits 1 and says what to do when no database is configured and none is running', async () => {
      const dir = tempDir('sluice-cli-nodb-');
      try {
        const r = await runCli(['add', 'hello'], { env: { DATABASE_URL: '', SLUICE_EMBEDDED_DIR: path.join(dir, 'pgdata') } });
        expect(r.code).to.equal(1);
        expectOneErrorLine(r, /no database configured and no embedded PostgreSQL running in .*pgdata: set DATABASE_URL .* or run "sluice start"/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});

// ------------------------------------------------------------------------------------------------

const ECHO_TASK = `export default async function echo(payload) { return { echoed: payload }; }\n`;
const WAIT_TASK = `import { existsSync } from 'node:fs';
// waits until payload.file exists (or the job is aborted), then completes
export default async function waitForFile(payload, ctx) {
  while (!existsSync(payload.file)) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    await new Promise((r) => setTimeout(r, 20));
  }
  return { waited: true };
}
`;

describe('sluice start', function () {
  this.timeout(120_000);
  let url: string;
  let pool: pg.Pool;
  let dir: string;
  let env: Record<string, string>;

  before(async () => {
    url = await createTestDatabase();
    pool = new pg.Pool({ connectionString: url, max: 2 });
    dir = tempDir('sluice-cli-start-');
    mkdirTasks(dir);
    env = {
      DATABASE_URL: url,
      SLUICE_HTTP_PORT: '0',
      SLUICE_SHUTDOWN_GRACE_MS: '60000',
      SLUICE_HEARTBEAT_MS: '500',
      SLUICE_LOG_LEVEL: 'info',
    };
  });
  afterEach(() => killAllCli());
  after(async () => {
    await killAllCli();
    await pool.end();
    rmSync(dir, { recursive: true, force: true });
  });

  function mkdirTasks(base: string): void {
    const tasks = path.join(base, 'tasks');
    mkdirSync(tasks);
    writeFileSync(path.join(tasks, 'echo.js'), ECHO_TASK);
    writeFileSync(path.join(tasks, 'wait_for_file.js'), WAIT_TASK);
  }

  const job = async (id: string) => (await pool.query('SELECT * FROM sluice.jobs WHERE id = $1', [id])).rows[0];
  const fetchText = async (u: string) => {
    const res = await fetch(u);
    return { status: res.status, body: await res.text() };
  };

  it('serves metrics, drains an in-flight job on SIGTERM with /readyz failing first, and exits 0', async () => {
    // a flag wins over the environment
    const daemon = startCli(['start', '--migrate', '--tasks', path.join(dir, 'tasks'), '--concurrency', '3'], { env: { ...env, SLUICE_CONCURRENCY: '7' } });
    const base = await daemon.httpUrl();
    const started = await daemon.waitForLog('the worker to start', (l) => /^worker started/.test(l.msg));
    expect(started).to.include({ concurrency: 3 });
    expect(base).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    const banner = await daemon.waitForLog('the enqueue hint', (l) => typeof l.cli === 'string');
    // no hello task here: the hint names one without the hello example's payload
    expect(banner.cli).to.equal('sluice add echo');
    expect(banner.sql).to.equal("SELECT sluice.add_job('echo');");

    await waitFor('/readyz to be 200', async () => (await fetchText(`${base}/readyz`)).status === 200);
    expect((await fetchText(`${base}/healthz`)).status).to.equal(200);
    const completed = async () => metricSum((await fetchText(`${base}/metrics`)).body, 'sluice_jobs_completed_total');
    expect(await completed()).to.equal(0);

    const ids = await Promise.all([1, 2, 3].map((n) => runJson<{ id: string }>(['add', 'echo', '--payload', JSON.stringify({ n })], { env })));
    await waitFor('the completed counter to reach 3', async () => (await completed()) === 3);
    expect((await job(ids[0]!.id)).result).to.deep.equal({ echoed: { n: 1 } });
    const metrics = (await fetchText(`${base}/metrics`)).body;
    expect(metrics).to.match(/^sluice_jobs_completed_total\{queue="default",task="echo"\} 3$/m);

    // a job that runs until the test lets it finish
    const gateFile = path.join(dir, 'gate');
    const slow = (await runJson<{ id: string }>(['add', 'wait_for_file', '--payload', JSON.stringify({ file: gateFile })], { env })).id;
    await waitFor('the slow job to run', async () => (await job(slow)).status === 'running');

    daemon.signal('SIGTERM');
    const notReady = await waitFor('/readyz to fail after SIGTERM', async () => {
      const r = await fetchText(`${base}/readyz`);
      return r.status === 503 ? r : undefined;
    });
    expect(JSON.parse(notReady!.body)).to.deep.equal({ status: 'not ready', reason: 'worker is stopping' });
    // still alive and serving while the job runs: liveness holds, the job is not cut short
    expect((await fetchText(`${base}/healthz`)).status).to.equal(200);
    expect(daemon.running).to.equal(true);
    expect((await job(slow)).status).to.equal('running');

    writeFileSync(gateFile, '');
    const exit = await daemon.exited;
    expect(exit, daemon.output()).to.deep.equal({ code: 0, signal: null });
    expect(await job(slow)).to.include({ status: 'completed', attempts: 1 });
    expect((await job(slow)).result).to.deep.equal({ waited: true });
    const messages = daemon.logs.map((l) => l.msg);
    expect(messages.indexOf('worker stopped'), 'the worker stops before sluice exits').to.be.within(0, messages.indexOf('sluice exited') - 1);
    expect(messages.at(-1)).to.equal('sluice exited');
    expect((await pool.query('SELECT count(*)::int AS n FROM sluice.workers')).rows[0].n).to.equal(0);
  });

  it('exits at once (143) on a second SIGTERM, leaving the running job to the rescuer', async () => {
    const daemon = startCli(['start', '--tasks', path.join(dir, 'tasks')], { env });
    await daemon.httpUrl();
    const stuck = (await runJson<{ id: string }>(['add', 'wait_for_file', '--payload', JSON.stringify({ file: path.join(dir, 'never') })], { env })).id;
    await waitFor('the job to run', async () => (await job(stuck)).status === 'running');
    daemon.signal('SIGTERM');
    await daemon.waitForLog('the graceful stop to begin', (l) => /received: stopping gracefully/.test(l.msg));
    daemon.signal('SIGTERM');
    const exit = await daemon.exited;
    expect(exit.code, daemon.output()).to.equal(143);
    expect((await job(stuck)).status).to.equal('running');
    await pool.query(`UPDATE sluice.jobs SET status = 'cancelled', finished_at = now() WHERE id = $1`, [stuck]);
  });

  it('exits 2 naming the key for a bad configuration or a missing tasks folder', async () => {
    const [badConfig, noTasks, badFlag] = await Promise.all([
      runCli(['start'], { env: { ...env, SLUICE_QUEUES: ' ' } }),
      runCli(['start', '--tasks', path.join(dir, 'missing')], { env }),
      runCli(['start', '--concurrency', '0'], { env }),
    ]);
    expect(badConfig.code).to.equal(2);
    expectOneErrorLine(badConfig, /worker\.queues: has an invalid queue name/);
    expect(noTasks.code).to.equal(2);
    expectOneErrorLine(noTasks, /worker\.tasks: .*missing does not exist/);
    expect(badFlag.code).to.equal(2);
    expectOneErrorLine(badFlag, /--concurrency must be an integer of at least 1/);
  });
});

// ------------------------------------------------------------------------------------------------

describe('sluice start with no database configured (embedded PostgreSQL)', function () {
  this.timeout(240_000);
  let dir: string;
  let dataDir: string;
  // no DATABASE_URL, no config: everything comes from the working directory
  const env = { DATABASE_URL: '', SLUICE_HTTP_PORT: '0' };

  before(() => {
    dir = tempDir('sluice-cli-zero-');
    dataDir = path.join(dir, '.sluice', 'pgdata');
  });
  after(async () => {
    await killAllCli();
    await killPostmaster(dataDir);
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts an embedded PostgreSQL, runs the example tasks, reaches `sluice add` from another process, and stops it at exit', async () => {
    const daemon = startCli(['start'], { env, cwd: dir });
    const embedded = await daemon.waitForLog('the embedded PostgreSQL', (l) => typeof l.psql === 'string', 180_000);
    expect(embedded.dataDir).to.equal(dataDir);
    const banner = await daemon.waitForLog('the enqueue hint', (l) => typeof l.cli === 'string', 120_000);
    expect(banner.cli).to.equal(`sluice add hello --payload '{"name":"world"}'`);
    const pgPid = postmasterPid(dataDir)!;
    expect(pgPid).to.be.a('number');

    // "another terminal": same folder, no configuration
    const added = await runCli(['add', 'hello', '--payload', '{"name":"world"}'], { env: { DATABASE_URL: '' }, cwd: dir });
    expect(added.code, added.stderr).to.equal(0);
    const id = added.stdout.trim();
    const shown = await waitFor('the hello job to complete', async () => {
      const j = await runJson(['show', id], { env: { DATABASE_URL: '' }, cwd: dir });
      return j.status === 'completed' ? j : undefined;
    }, 60_000);
    expect(shown.result).to.deep.include({ greeting: 'hello world' });

    // the example that fails for good: one attempt, no retries
    const bad = (await runJson<{ id: string }>(['add', 'send_welcome', '--payload', '{"email":"nope"}'], { env: { DATABASE_URL: '' }, cwd: dir })).id;
    const failed = await waitFor('the bad job to fail', async () => {
      const j = await runJson(['show', bad], { env: { DATABASE_URL: '' }, cwd: dir });
      return j.status === 'failed' ? j : undefined;
    }, 60_000);
    expect(failed.attempts).to.equal(1);
    expect(failed.lastError).to.match(/^PermanentError: payload\.email must be an email address/);

    daemon.signal('SIGTERM');
    const exit = await daemon.exited;
    expect(exit, daemon.output()).to.deep.equal({ code: 0, signal: null });
    expect(processAlive(pgPid), 'the embedded postgres is stopped').to.equal(false);
    expect(existsSync(path.join(dataDir, 'postmaster.pid'))).to.equal(false);

    // with nothing running, commands say what to do
    const after = await runCli(['status'], { env: { DATABASE_URL: '' }, cwd: dir });
    expect(after.code).to.equal(1);
    expectOneErrorLine(after, /no embedded PostgreSQL running in .*\.sluice\/pgdata/);

    // the data survives a restart
    const again = startCli(['start'], { env, cwd: dir });
    await again.waitForLog('the enqueue hint', (l) => typeof l.cli === 'string', 120_000);
    const kept = await runJson(['show', id], { env: { DATABASE_URL: '' }, cwd: dir });
    expect(kept).to.include({ id, status: 'completed' });
    const pgPid2 = postmasterPid(dataDir)!;
    again.signal('SIGINT');
    expect((await again.exited).code, again.output()).to.equal(0);
    expect(processAlive(pgPid2)).to.equal(false);
  });
});
