// What a first user of sluice runs into: secrets in output, piped output, where a bad setting
// came from, far-future jobs, the roles, large payloads, and a task that is not handled.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { loadConfig } from '../src/config/load.js';
import { ConfigError } from '../src/errors.js';
import { freePort } from '../src/embedded/cluster.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { cliPath, killAllCli, metricSum, root, runCli, startCli } from './support/cli.js';
import { migrated, startWorker, stopWorkers } from './support/worker.js';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const SECRETS = ['pw1secret', 'qsecret', 'sslsecret'];
const noSecrets = (text: string, where: string) => {
  for (const s of SECRETS) expect(text, `${where} shows ${s}`).to.not.include(s);
};

describe('a new user of sluice', function () {
  after(() => killAllCli());

  describe('credentials in the database URL', () => {
    let deadPort: number;
    let secretUrl: string;
    before(async () => {
      deadPort = await freePort();
      secretUrl = `postgresql://app:pw1secret@127.0.0.1:${deadPort}/jobs?password=qsecret&sslpassword=sslsecret&application_name=x`;
    });

    it('are never printed by status, config check (text or JSON), or a bad-URL error', async () => {
      const env = { DATABASE_URL: secretUrl };
      const [status, check, checkJson, badUrl] = await Promise.all([
        runCli(['status'], { env }),
        runCli(['config', 'check'], { env }),
        runCli(['config', 'check', '--json'], { env }),
        runCli(['config', 'check'], { env: { DATABASE_URL: 'mysql://app:pw1secret@h/db?password=qsecret' } }),
      ]);
      expect(status.code).to.equal(1);
      expect(status.stderr).to.match(/cannot connect to the database at postgresql:\/\/app:\*\*\*@127\.0\.0\.1/);
      expect(check.code).to.equal(0);
      expect(check.stdout).to.include('password=***').and.include('sslpassword=***');
      expect(JSON.parse(checkJson.stdout).database.url).to.include('app:***@');
      expect(badUrl.code).to.equal(2);
      for (const [name, r] of Object.entries({ status, check, checkJson, badUrl })) noSecrets(r.stdout + r.stderr, name);
    });

    it('are never printed by the daemon: its logs, /readyz and /metrics', async () => {
      const httpPort = await freePort();
      const daemon = startCli(['start', '--tasks', path.join(root, 'examples', 'tasks')], {
        env: { DATABASE_URL: secretUrl, SLUICE_HTTP_PORT: String(httpPort), SLUICE_LOG_LEVEL: 'debug' },
      });
      await daemon.waitForLog('the retry line', (l) => /cannot start yet/.test(l.msg));
      const base = `http://127.0.0.1:${httpPort}`;
      const readyz = await fetch(`${base}/readyz`);
      expect(readyz.status).to.equal(503);
      const bodies = (await readyz.text()) + (await (await fetch(`${base}/healthz`)).text()) + (await (await fetch(`${base}/metrics`)).text());
      daemon.signal('SIGTERM');
      await daemon.exited;
      noSecrets(daemon.output(), 'the daemon output');
      noSecrets(bodies, 'the HTTP answers');
    });
  });

  it('ends quietly with exit 0 when its output is piped into a reader that goes away', async () => {
    const child = spawn(process.execPath, ['--import', pathToFileURL(path.join(root, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href, cliPath, '--help'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // the reader is gone before the first line is written
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    expect(stderr).to.equal('');
    expect(code).to.equal(0);
  });

  describe('configuration errors', () => {
    const message = (opts: Parameters<typeof loadConfig>[0]): string => {
      try {
        loadConfig(opts);
      } catch (err) {
        expect(err).to.be.instanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error('expected a ConfigError');
    };

    it('name where each bad value came from, the key, the value as given and what is allowed', async () => {
      const dir = await import('node:fs').then((fs) => fs.mkdtempSync(path.join((process.env.TMPDIR ?? '/tmp'), 'sluice-cfg-')));
      const file = path.join(dir, 'f.yaml');
      (await import('node:fs')).writeFileSync(file, 'worker:\n  concurrency: 5\n  queues: [" "]\ndatabase:\n  retryOnStartup: perhaps\n');
      try {
        const m = message({ file, env: { SLUICE_CONCURRENCY: 'abc', SLUICE_STRICT_BUDGET: 'maybe', SLUICE_HTTP_PORT: '70000', SLUICE_LOG_LEVEL: 'loud' } });
        expect(m).to.include('worker.concurrency: must be an integer >= 1: got "abc" (from environment variable SLUICE_CONCURRENCY)');
        expect(m).to.include(`database.retryOnStartup: must be true or false (also 1/0, yes/no, on/off): got "perhaps" (in ${file})`);
        expect(m).to.include('database.strictBudget: must be true or false (also 1/0, yes/no, on/off): got "maybe" (from environment variable SLUICE_STRICT_BUDGET)');
        expect(m).to.match(/http\.port: ports must be within range 0 - 65535: got "70000" \(from environment variable SLUICE_HTTP_PORT\)/);
        expect(m).to.match(/log\.level: must be one of the possible values: .*: got "loud" \(from environment variable SLUICE_LOG_LEVEL\)/);
        expect(m).to.match(new RegExp(`worker\\.queues: has an invalid queue name " ".*: got \\[" "\\] \\(in ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\)`));
        expect(m, 'the file says 5: the error is not blamed on it').to.not.match(/concurrency.*in .*f\.yaml/);
        const flag = message({ overrides: { worker: { concurrency: 0 } }, overrideSource: () => '--concurrency', env: {} });
        expect(flag).to.include('worker.concurrency: must be an integer >= 1: got 0 (from --concurrency)');
      } finally {
        (await import('node:fs')).rmSync(dir, { recursive: true, force: true });
      }
    });

    it('derive worker.heartbeatMs from worker.rescueAfterMs when only the latter is set, and refuse only what was set', () => {
      expect(loadConfig({ env: { SLUICE_RESCUE_AFTER_MS: '5000' } }).worker.heartbeatMs).to.equal(1000);
      expect(loadConfig({ env: {} }).worker.heartbeatMs).to.equal(2000);
      expect(loadConfig({ env: { SLUICE_RESCUE_AFTER_MS: '600000' } }).worker.heartbeatMs).to.equal(2000);
      const m = message({ env: { SLUICE_RESCUE_AFTER_MS: '5000', SLUICE_HEARTBEAT_MS: '2000' } });
      expect(m).to.match(/worker\.heartbeatMs \(2000\) must be at most a third of worker\.rescueAfterMs \(5000\).*lower worker\.heartbeatMs or raise worker\.rescueAfterMs/);
      expect(m).to.include('heartbeatMs from environment variable SLUICE_HEARTBEAT_MS, rescueAfterMs from environment variable SLUICE_RESCUE_AFTER_MS');
    });
  });

  describe('with a database', () => {
    let url: string;
    before(async () => {
      url = await createTestDatabase();
      await (await migrated(url)).end();
    });
    afterEach(() => stopWorkers());

    it('takes a payload from a file (@FILE) or standard input (-), up to the 1 MiB limit', async () => {
      const fs = await import('node:fs');
      const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'sluice-payload-'));
      try {
        const big = { blob: 'x'.repeat(900_000) };
        const file = path.join(dir, 'big.json');
        fs.writeFileSync(file, JSON.stringify(big));
        const env = { DATABASE_URL: url };
        const fromFile = await runCli(['add', 'hello', '--payload', `@${file}`, '--json'], { env });
        expect(fromFile.code, fromFile.stderr).to.equal(0);
        const fromStdin = await runCli(['add', 'hello', '--payload', '-', '--json'], { env, input: '{"name":"stdin"}' });
        expect(fromStdin.code, fromStdin.stderr).to.equal(0);
        const pool = await migrated(url);
        try {
          const rows = await pool.query('SELECT id::text, payload FROM sluice.jobs WHERE id = ANY ($1::bigint[])', [[JSON.parse(fromFile.stdout).id, JSON.parse(fromStdin.stdout).id]]);
          expect(rows.rows.map((r) => r.payload)).to.have.deep.members([big, { name: 'stdin' }]);
        } finally {
          await pool.end();
        }
        fs.writeFileSync(file, JSON.stringify({ blob: 'x'.repeat(1_100_000) }));
        const tooBig = await runCli(['add', 'hello', '--payload', `@${file}`], { env });
        expect(tooBig.code).to.equal(2);
        expect(tooBig.stderr).to.match(/payload is \d+ bytes; at most 1048576/);
        const missing = await runCli(['add', 'hello', '--payload', '@/nonexistent.json'], { env });
        expect(missing.code).to.equal(2);
        expect(missing.stderr).to.match(/--payload @\/nonexistent\.json: cannot read \/nonexistent\.json: ENOENT/);
        const badStdin = await runCli(['add', 'hello', '--payload', '-'], { env, input: 'not json' });
        expect(badStdin.stderr).to.match(/--payload \(from standard input\) is not valid JSON/);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('shows a finished job with the worker it ran on, not as locked', async () => {
      const w = await startWorker(url, { hello: async () => 'hi' });
      const id = await w.addJob({ task: 'hello' });
      await waitFor('the job to complete', async () => (await w.db.query('SELECT status FROM sluice.jobs WHERE id = $1', [id])).rows[0].status === 'completed');
      const shown = await runCli(['show', id], { env: { DATABASE_URL: url } });
      expect(shown.code, shown.stderr).to.equal(0);
      expect(shown.stdout).to.not.match(/locked by/);
      expect(shown.stdout).to.match(new RegExp(`last ran on\\s+${w.identity.id}`));
    });

    it('keeps an idle worker idle with a job delayed by 30 days (no busy loop, no timer overflow)', async () => {
      const warnings: string[] = [];
      const onWarning = (w: Error) => warnings.push(w.name);
      process.on('warning', onWarning);
      try {
        const w = await startWorker(url, { hello: async () => 'hi' }, { worker: { pollMs: 600_000, heartbeatMs: 200 } });
        const claims = async () => metricSum(await w.metrics.registry.metrics(), 'sluice_claims_total');
        const heartbeat = async () => (await w.db.query('SELECT heartbeat_at FROM sluice.workers WHERE id = $1', [w.identity.id])).rows[0].heartbeat_at.getTime();
        await w.addJob({ task: 'hello', runAt: new Date(Date.now() + 30 * 86_400_000) });
        const before = await claims();
        // three heartbeats later the worker is alive and turning, and its claims have not piled up
        for (let i = 0; i < 3; i++) {
          const last = await heartbeat();
          await waitFor('the next heartbeat', async () => (await heartbeat()) > last);
        }
        expect((await claims()) - before).to.be.at.most(2);
        expect(warnings).to.not.include('TimeoutOverflowWarning');
      } finally {
        process.off('warning', onWarning);
      }
    });
  });
});

describe('least-privilege roles, set up as the README says', () => {
  let url: string;
  let admin: import('pg').Pool;
  const suffix = String(process.pid);
  const app = `app_${suffix}`;
  const daemon = `daemon_${suffix}`;
  const as = async (user: string) => {
    const { default: pg } = await import('pg');
    const u = new URL(url);
    u.username = user;
    return new pg.Pool({ connectionString: u.toString(), max: 1 });
  };

  before(async () => {
    url = await createTestDatabase();
    admin = await migrated(url);
    for (const r of [app, daemon]) await admin.query(`DROP ROLE IF EXISTS ${r}`);
    await admin.query(`CREATE ROLE ${app} LOGIN`);
    await admin.query(`CREATE ROLE ${daemon} LOGIN`);
  });
  after(async () => {
    await stopWorkers();
    for (const r of [app, daemon]) await admin.query(`DROP OWNED BY ${r}`).then(() => admin.query(`DROP ROLE IF EXISTS ${r}`)).catch(() => undefined);
    await admin.end();
  });

  it('`sluice roles` creates the group roles and grants them to the named logins, with a producer statement_timeout', async () => {
    const missing = await runCli(['roles', '--producer', 'nobody_here'], { env: { DATABASE_URL: url } });
    expect(missing.code).to.equal(2);
    expect(missing.stderr).to.match(/^sluice: role "nobody_here" does not exist: create it first/);

    const r = await runCli(['roles', '--producer', app, '--worker', daemon, '--json'], { env: { DATABASE_URL: url } });
    expect(r.code, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.deep.equal({
      producer: 'sluice_producer', worker: 'sluice_worker', producers: [app], workers: [daemon], producerStatementTimeoutMs: 30000,
    });
    const producer = await as(app);
    try {
      const id = (await producer.query("SELECT sluice.add_job('hello', '{\"name\":\"ada\"}') AS id")).rows[0].id;
      expect((await producer.query('SHOW statement_timeout')).rows[0].statement_timeout).to.equal('30s');
      await producer.query('SELECT * FROM sluice.jobs').then(
        () => expect.fail('a producer read the jobs table'),
        (err: Error) => expect(err.message).to.match(/permission denied for table jobs/),
      );
      const w = await startWorker((() => { const u = new URL(url); u.username = daemon; return u.toString(); })(), { hello: async (p: { name: string }) => `hi ${p.name}` });
      await waitFor('the worker role to run the job', async () => (await producer.query('SELECT status FROM sluice.my_jobs WHERE id = $1', [id])).rows[0]?.status === 'completed');
      await w.stop();
    } finally {
      await producer.end();
    }
  });
});
