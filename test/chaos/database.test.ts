// A database that refuses work: read-only as after a failover, or out of connection slots.
// The worker must not crash, not spin, not exceed its bound, report not-ready, and resume alone.
import { expect } from 'chai';
import pg from 'pg';
import type { LocalCluster } from '../../src/embedded/cluster.js';
import { destroyCluster, startCluster, waitFor } from '../support/db.js';
import { capturingLogger, ConnectionSampler, createAppRole, faultsEnabled } from '../support/faults.js';
import { migrated, startWorker, stopWorkers } from '../support/worker.js';

describe('chaos: the database refuses work', function () {
  this.timeout(120_000);
  let cluster: LocalCluster;
  let admin: pg.Pool;
  let appUrl: string;

  beforeEach(async function () {
    if (!faultsEnabled()) this.skip();
    // 3 slots are reserved for superusers: 7 for ordinary roles such as the worker's
    cluster = await startCluster({ max_connections: 10, superuser_reserved_connections: 3 });
    admin = await migrated(cluster.url(), 1);
    appUrl = await createAppRole(cluster.url());
    await admin.query('GRANT ALL ON SCHEMA sluice TO app; GRANT ALL ON ALL TABLES IN SCHEMA sluice TO app; GRANT ALL ON ALL SEQUENCES IN SCHEMA sluice TO app');
  });
  afterEach(async () => {
    await stopWorkers();
    await admin?.end();
    if (cluster) await destroyCluster(cluster);
  });

  it('warns when its connection budget does not fit, and refuses to start with strictBudget', async () => {
    const { log, lines } = capturingLogger();
    // 7 ordinary slots: 8 + 1 cannot fit
    const w = await startWorker(appUrl, { hello: async () => 'hi' }, { database: { poolSize: 8 } }, log);
    const warning = lines.find((l) => l.includes('"level":40') && l.includes('"needed":9'));
    expect(warning, lines.join('')).to.not.equal(undefined);
    const id = await w.addJob({ task: 'hello' });
    await waitFor('the worker to work anyway', async () => (await status(id)) === 'completed');
    let refused: Error | undefined;
    try {
      await startWorker(appUrl, { hello: async () => 'hi' }, { database: { poolSize: 8, strictBudget: true, retryOnStartup: false } });
    } catch (err) {
      refused = err as Error;
    }
    expect(refused?.message).to.match(/strictBudget/);
  });

  it('starting against an unreachable database retries with a clear log line, then runs', async () => {
    await cluster.stop();
    const { log, lines } = capturingLogger();
    const starting = startWorker(appUrl, { hello: async () => 'hi' }, {}, log);
    await waitFor('the retry line', () => lines.some((l) => l.includes('cannot start yet') && l.includes(`127.0.0.1:${cluster.port}/postgres`)), 30_000);
    expect(lines.join('')).to.not.contain('password');
    await cluster.start();
    const w = await starting;
    const id = await w.addJob({ task: 'hello' });
    await waitFor('a job to run', async () => (await status(id)) === 'completed');
  });

  const addJobReadWrite = async (): Promise<string> => {
    const c = await admin.connect();
    try {
      await c.query('BEGIN READ WRITE');
      const r = await c.query("SELECT sluice.add_job('hello') AS id");
      await c.query('COMMIT');
      return String(r.rows[0].id);
    } finally {
      c.release();
    }
  };
  const status = async (id: string) => (await admin.query('SELECT status FROM sluice.jobs WHERE id = $1', [id])).rows[0].status;

  it('a read-only database (failover): not ready, backs off, resumes when writable again', async () => {
    const { log, lines } = capturingLogger();
    const w = await startWorker(appUrl, { hello: async () => 'hi' }, { worker: { heartbeatMs: 200, pollMs: 500 } }, log);
    await waitFor('ready', () => w.ready);
    await admin.query('ALTER SYSTEM SET default_transaction_read_only = on');
    await admin.query('SELECT pg_reload_conf()');
    await waitFor('not ready while read-only', () => !w.ready, 30_000);
    const id = await addJobReadWrite();
    const failuresBefore = lines.filter((l) => l.includes('claiming jobs failed')).length;
    await waitFor('claims to fail on the read-only database', () => lines.filter((l) => l.includes('claiming jobs failed')).length > failuresBefore, 30_000);
    expect(await status(id)).to.equal('queued');
    await admin.query('ALTER SYSTEM RESET default_transaction_read_only');
    await admin.query('SELECT pg_reload_conf()');
    await waitFor('the job to run once writable', async () => (await status(id)) === 'completed', 60_000);
    await waitFor('ready again', () => w.ready, 30_000);
    // backoff, not a spin: a handful of failed claims, not thousands
    const failures = lines.filter((l) => l.includes('claiming jobs failed')).length;
    expect(failures).to.be.below(200);
  });

  it('connections refused (53300 too many connections): no crash, no more than its bound, resumes', async () => {
    const { log, lines } = capturingLogger();
    const sampler = new ConnectionSampler(cluster.url(), 20);
    await sampler.start();
    const w = await startWorker(appUrl, { hello: async () => 'hi' }, { database: { poolSize: 3 }, worker: { heartbeatMs: 200, pollMs: 300 } }, log);
    await waitFor('ready', () => w.ready);
    // the server now admits one connection for the worker's role: the listener already has it
    await admin.query('ALTER ROLE app CONNECTION LIMIT 1');
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'sluice %'");
    const id = String((await admin.query("SELECT sluice.add_job('hello') AS id")).rows[0].id);
    await waitFor('the worker to be refused', () => lines.some((l) => l.includes('"code":"53300"')), 30_000);
    await waitFor('not ready without connections', () => !w.ready, 30_000);
    expect(await status(id)).to.equal('queued');
    await admin.query('ALTER ROLE app CONNECTION LIMIT -1');
    await waitFor('the job to run once connections are allowed', async () => (await status(id)) === 'completed', 60_000);
    await waitFor('ready again', () => w.ready, 30_000);
    await sampler.stop();
    expect(sampler.peak).to.be.at.most(4);
    const refusals = lines.filter((l) => l.includes('"code":"53300"')).length;
    expect(refusals, 'refused attempts back off instead of spinning').to.be.below(300);
  });
});
