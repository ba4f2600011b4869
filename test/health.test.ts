import { expect } from 'chai';
import pg from 'pg';
import { readHealth, type DatabaseHealth, type HealthThresholds } from '../src/admin/health.js';
import { startHttpServer, type HttpServer } from '../src/http/server.js';
import { HealthCheck } from '../src/maintenance/health-check.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { capturingLogger } from './support/faults.js';
import { migrated, startWorker, stopWorkers } from './support/worker.js';

const off: HealthThresholds = { xminAgeWarnMs: 0, deadRowsWarn: 0, notifyQueueWarn: 0 };

describe('database health (readHealth)', () => {
  let url: string;
  let pool: pg.Pool;
  const sessions: pg.Client[] = [];

  /** A session of its own, ended after the test. */
  async function session(applicationName: string): Promise<{ client: pg.Client; pid: number }> {
    const client = new pg.Client({ connectionString: url, application_name: applicationName });
    client.on('error', () => undefined);
    await client.connect();
    sessions.push(client);
    const pid = (await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    return { client, pid };
  }

  /** readHealth, polled until `until` holds (the statistics and the clock move on their own). */
  async function healthWhen(what: string, thresholds: HealthThresholds, until: (h: DatabaseHealth) => boolean): Promise<DatabaseHealth> {
    let last: DatabaseHealth | undefined;
    await waitFor(what, async () => until((last = await readHealth(pool, 'sluice', thresholds))));
    return last!;
  }

  before(async () => {
    url = await createTestDatabase();
    pool = await migrated(url);
    // the dead rows counted here must stay until the test has seen them
    await pool.query('ALTER TABLE sluice.jobs SET (autovacuum_enabled = false)');
  });
  afterEach(async () => {
    for (const c of sessions.splice(0)) await c.end().catch(() => undefined);
  });
  after(async () => {
    await pool.end();
  });

  it('reports no holder and no warnings on a quiet database', async () => {
    const h = await readHealth(pool, 'sluice', { xminAgeWarnMs: 1, deadRowsWarn: 1_000_000, notifyQueueWarn: 0.5 });
    expect(h.xmin).to.equal(null);
    expect(h.warnings).to.deep.equal([]);
    expect(h.jobsTable.tableBytes).to.be.greaterThan(0);
    expect(h.jobsTable.indexBytes).to.be.greaterThan(0);
  });

  it('names the REPEATABLE READ session that holds a snapshot: pid, application_name, state, since', async () => {
    const { client, pid } = await session('analytics-report');
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await client.query('SELECT count(*) FROM sluice.jobs');
    const h = await healthWhen('the held snapshot to pass 300 ms', { ...off, xminAgeWarnMs: 300 }, (r) => r.warnings.length > 0);
    expect(h.xmin).to.include({ pid, applicationName: 'analytics-report', state: 'idle in transaction' });
    expect(h.xmin!.ageMs).to.be.at.least(300);
    expect(Date.parse(h.xmin!.since!)).to.be.below(Date.now());
    expect(h.warnings).to.have.length(1);
    expect(h.warnings[0]).to.match(new RegExp(`^xmin held \\d+ (ms|s) by pid ${pid} \\(analytics-report, idle in transaction\\)`));
    await client.query('COMMIT');
    const after = await readHealth(pool, 'sluice', { ...off, xminAgeWarnMs: 300 });
    expect(after.xmin).to.equal(null);
    expect(after.warnings).to.deep.equal([]);
  });

  it('names an idle-in-transaction session that holds only a transaction id (READ COMMITTED after a write)', async () => {
    const { client, pid } = await session('forgot-to-commit');
    await client.query('BEGIN');
    await client.query('SELECT txid_current()');
    const h = await healthWhen('the open transaction to pass 200 ms', { ...off, xminAgeWarnMs: 200 }, (r) => r.warnings.length > 0);
    expect(h.xmin).to.include({ pid, applicationName: 'forgot-to-commit', state: 'idle in transaction' });
    expect(h.warnings[0]).to.contain(`by pid ${pid} (forgot-to-commit, idle in transaction)`);
  });

  it('picks the older of two holders', async () => {
    const older = await session('older');
    await older.client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await older.client.query('SELECT txid_current()');
    const newer = await session('newer');
    await newer.client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await newer.client.query('SELECT txid_current()');
    const h = await readHealth(pool, 'sluice', off);
    expect(h.xmin).to.include({ pid: older.pid, applicationName: 'older' });
  });

  it('counts dead rows of the jobs table and warns past health.deadRowsWarn', async () => {
    await pool.query("INSERT INTO sluice.jobs (task) SELECT 'churn' FROM generate_series(1, 2000)");
    await pool.query("DELETE FROM sluice.jobs WHERE task = 'churn'");
    const h = await healthWhen('the statistics to count 2,000 dead rows', { ...off, deadRowsWarn: 2000 }, (r) => r.jobsTable.deadRows >= 2000);
    expect(h.warnings).to.have.length(1);
    expect(h.warnings[0]).to.match(/^jobs table holds \d+ dead row versions \(warn at 2000\); last vacuum never, last autovacuum never$/);
    expect((await readHealth(pool, 'sluice', { ...off, deadRowsWarn: 10_000_000 })).warnings).to.deep.equal([]);
    await pool.query('VACUUM sluice.jobs');
    const vacuumed = await healthWhen('the statistics to show the vacuum', { ...off, deadRowsWarn: 2000 }, (r) => r.jobsTable.lastVacuum !== null);
    expect(vacuumed.jobsTable.deadRows).to.be.below(2000);
    expect(vacuumed.warnings).to.deep.equal([]);
  });

  it('sees the notification queue fill while a listener sits in a transaction, and warns past health.notifyQueueWarn', async () => {
    const listener = await session('slow-listener');
    await listener.client.query('LISTEN health_test');
    await listener.client.query('BEGIN');
    await listener.client.query('SELECT 1');
    const notifier = await session('notifier');
    // a page of the queue is 8 kB: fill a few so the usage is clearly above 0
    for (let i = 0; i < 20; i++) await notifier.client.query("SELECT pg_notify('health_test', repeat('x', 7000))");
    const h = await readHealth(pool, 'sluice', { ...off, notifyQueueWarn: 1e-9 });
    expect(h.notifyQueueUsage).to.be.greaterThan(0);
    expect(h.warnings).to.have.length(1);
    expect(h.warnings[0]).to.match(/^notification queue [\d.]+% full \(warn at 0%\)/);
  });

  it('counts client connections against max_connections, sluice ones by application_name', async () => {
    await session('sluice-health-test');
    await session('somebody-else');
    const h = await readHealth(pool, 'sluice', off);
    const server = (await pool.query("SELECT current_setting('max_connections')::int AS max")).rows[0].max as number;
    expect(h.connections.max).to.equal(server);
    expect(h.connections.used).to.be.at.least(3);
    expect(h.connections.bySluice).to.be.at.least(1);
    expect(h.connections.bySluice).to.be.below(h.connections.used);
  });
});

describe('database health in the worker: log, /readyz, /metrics', () => {
  let url: string;
  let pool: pg.Pool;
  let holder: pg.Client | undefined;
  let server: HttpServer | undefined;

  before(async () => {
    url = await createTestDatabase();
    pool = await migrated(url);
  });
  afterEach(async () => {
    await holder?.end().catch(() => undefined);
    holder = undefined;
    await server?.close();
    server = undefined;
    await stopWorkers();
  });
  after(async () => {
    await pool.end();
  });

  const get = async (u: string) => {
    const res = await fetch(u);
    return { status: res.status, text: await res.text() };
  };

  it('a failed check leaves no stale reading behind (health_up 0, no warning shown)', async () => {
    const { log } = capturingLogger('info');
    const own = new pg.Pool({ connectionString: url, max: 1 });
    own.on('error', () => undefined);
    const check = new HealthCheck({ pool: own, schema: 'sluice', thresholds: { xminAgeWarnMs: 0, deadRowsWarn: 1, notifyQueueWarn: 0 }, everyMs: 60_000, log });
    try {
      await pool.query("INSERT INTO sluice.jobs (task) VALUES ('x'); DELETE FROM sluice.jobs WHERE task = 'x'");
      await waitFor('a reading with a warning', async () => (await check.check()) && check.warnings.length > 0);
    } finally {
      await own.end();
    }
    let err: Error | undefined;
    await check.check().catch((e: Error) => (err = e));
    expect(err?.message).to.match(/pool/i);
    expect(check.latest).to.equal(undefined);
    expect(check.warnings).to.deep.equal([]);
  });

  it('warns once naming the holder of a real held snapshot, stays ready with a warning field, and clears when it ends', async () => {
    const { log, lines } = capturingLogger('info');
    const worker = await startWorker(url, { noop: async () => undefined }, { health: { xminAgeWarnMs: 300, checkEveryMs: 50 } }, log);
    server = await startHttpServer(worker, { host: '127.0.0.1', port: 0 });
    await waitFor('the worker to be ready', async () => (await get(`${server!.url}/readyz`)).status === 200);

    holder = new pg.Client({ connectionString: url, application_name: 'analytics-report' });
    await holder.connect();
    const pid = (await holder.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await holder.query('SELECT count(*) FROM sluice.jobs');

    let ready = { status: 0, text: '{}' };
    await waitFor('/readyz to show the held horizon', async () => JSON.parse((ready = await get(`${server!.url}/readyz`)).text).warning);
    expect(ready.status).to.equal(200);
    const body = JSON.parse(ready.text);
    expect(body.status).to.equal('ready');
    expect(body.warning).to.match(new RegExp(`^xmin held \\d+ (ms|s) by pid ${pid} \\(analytics-report, idle in transaction\\)`));

    const metrics = (await get(`${server.url}/metrics`)).text;
    expect(metrics).to.contain(`sluice_db_xmin_holder{pid="${pid}",application_name="analytics-report",state="idle in transaction"} 1`);
    expect(metrics).to.contain('sluice_db_health_warning{signal="xmin"} 1');
    expect(metrics).to.contain('sluice_db_health_up 1');
    expect(Number(/^sluice_db_xmin_age_seconds (\S+)$/m.exec(metrics)![1])).to.be.at.least(0.3);
    expect(Number(/^sluice_db_connections_max (\S+)$/m.exec(metrics)![1])).to.be.greaterThan(0);

    // several more checks see the same holder: still one warning line
    let seen = new Set<unknown>();
    await waitFor('five more health checks', () => seen.add(worker.health()).size > 5);
    const warned = () => lines.map((l) => JSON.parse(l)).filter((l) => l.level === 40 && l.signal === 'xmin');
    expect(warned()).to.have.length(1);
    expect(warned()[0].msg).to.contain(`by pid ${pid} (analytics-report, idle in transaction)`);
    expect(warned()[0].holder).to.include({ pid, applicationName: 'analytics-report' });

    await holder.query('COMMIT');
    await waitFor('the warning to clear', async () => JSON.parse((await get(`${server!.url}/readyz`)).text).warning === undefined);
    await waitFor('the log to say it cleared', () => lines.some((l) => /xmin back below its threshold/.test(l)));
    seen = new Set();
    await waitFor('three more health checks', () => seen.add(worker.health()).size > 3);
    expect(warned()).to.have.length(1);
    expect((await get(`${server.url}/metrics`)).text).to.contain('sluice_db_health_warning{signal="xmin"} 0');
  });
});
