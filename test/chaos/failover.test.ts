// A worker across a promotion, on a real primary and streaming standby (pg_basebackup): its
// listener lands on a server in recovery, where LISTEN fails, and must come back by itself once
// that server is promoted, with nothing restarted.
import { expect } from 'chai';
import pg from 'pg';
import { migrate } from '../../src/db/migrate.js';
import { readiness } from '../../src/http/server.js';
import { waitFor } from '../support/db.js';
import { capturingLogger, faultsEnabled } from '../support/faults.js';
import { FaultyProxy } from '../support/proxy.js';
import { queryOnce, startStandbyPair, type StandbyPair } from '../support/standby.js';
import { PG15_BIN_DIR, requireTool } from '../support/tools.js';
import { startWorker, stopWorkers } from '../support/worker.js';

const status = async (url: string, id: string) => (await queryOnce<{ status: string }>(url, 'SELECT status FROM sluice.jobs WHERE id = $1', [id]))[0]?.status;

describe('chaos: the listener across a promotion', function () {
  this.timeout(180_000);
  let pair: StandbyPair | undefined;
  let proxy: FaultyProxy | undefined;

  beforeEach(async function () {
    if (!faultsEnabled()) this.skip();
    requireTool(this, 'pg_basebackup', `${PG15_BIN_DIR}/pg_basebackup`);
    pair = await startStandbyPair();
    const admin = new pg.Pool({ connectionString: pair.primary.url(), max: 1 });
    await migrate(admin, 'sluice');
    await admin.end();
    await waitFor('the schema on the standby', async () => (await queryOnce(pair!.standby.url(), "SELECT to_regclass('sluice.jobs') AS t"))[0].t);
  });
  afterEach(async () => {
    await stopWorkers();
    await proxy?.stop();
    proxy = undefined;
    await pair?.destroy();
    pair = undefined;
  });

  const config = { worker: { pollMs: 600_000, heartbeatMs: 300 }, database: { listenerCheckMs: 500, connectionTimeoutMs: 2000 } };

  it('keeps running while its listener cannot LISTEN on a server in recovery, and is ready again after the promotion', async () => {
    proxy = new FaultyProxy(pair!.primary.port);
    await proxy.start();
    const { log, lines } = capturingLogger();
    const w = await startWorker(proxy.url(), { hello: async () => 'hi' }, config, log);
    const first = await w.addJob({ task: 'hello' });
    await waitFor('a job before the failover', async () => (await status(pair!.primary.url(), first)) === 'completed');

    // the primary is gone and the address now leads to the standby, still in recovery
    proxy.retarget(pair!.standby.port);
    await pair!.primary.stop('immediate');
    proxy.cut();
    await waitFor('the worker to be not ready', () => !w.ready, 30_000);
    const failures = () => lines.filter((l) => /listener connection lost|listener cannot connect/.test(l)).length;
    // /readyz says why
    await waitFor('LISTEN refused on the standby', () => /during recovery/.test(readiness(w).reason ?? ''), 30_000);
    expect(readiness(w).reason).to.equal('the LISTEN connection is down: cannot execute LISTEN during recovery');
    const metric = async () => Number(/^sluice_listener_connect_failures_total (\d+)/m.exec(await w.metrics.registry.metrics())?.[1] ?? 0);
    await waitFor('several attempts to LISTEN', async () => (await metric()) >= 3, 30_000);
    expect(failures(), 'one log line while it keeps failing, not one per attempt').to.equal(1);

    await pair!.promote();
    await waitFor('the worker to be ready again by itself', () => w.ready, 30_000);
    expect(lines.filter((l) => l.includes('listener is listening again'))).to.have.length(1);
    const after = await w.addJob({ task: 'hello' });
    await waitFor('a job added after the promotion to run', async () => (await status(pair!.standby.url(), after)) === 'completed', 30_000);
  });

  it('starts against a standby, waits, and becomes ready once it is promoted', async () => {
    const { log } = capturingLogger();
    const url = pair!.standby.url();
    const starting = startWorker(url, { hello: async () => 'hi' }, config, log);
    let started = false;
    void starting.then(() => (started = true), () => undefined);
    // a standby refuses the worker's registration: it keeps trying (database.retryOnStartup)
    await waitFor('the standby to refuse a write', async () => {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query("SELECT sluice.add_job('hello')");
        return false;
      } catch (err) {
        return /read-only transaction/.test((err as Error).message);
      } finally {
        await c.end();
      }
    });
    expect(started).to.equal(false);
    await pair!.promote();
    const w = await starting;
    await waitFor('ready', () => w.ready, 30_000);
    const id = await w.addJob({ task: 'hello' });
    await waitFor('the job to run', async () => (await status(url, id)) === 'completed', 30_000);
  });
});
