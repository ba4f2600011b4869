// A frozen network: connections that neither deliver nor close. The listener must notice by its
// own ping, and frozen pool connections must time out, without breaking the connection bound.
import { expect } from 'chai';
import pg from 'pg';
import { createTestDatabase, waitFor } from '../support/db.js';
import { ConnectionSampler, faultsEnabled } from '../support/faults.js';
import { FaultyProxy } from '../support/proxy.js';
import { migrated, startWorker, stopWorkers } from '../support/worker.js';
import { report } from '../support/chaos.js';

describe('chaos: frozen network', function () {
  this.timeout(120_000);
  let url: string;
  let pool: pg.Pool;
  let proxy: FaultyProxy;

  before(async function () {
    if (!faultsEnabled()) this.skip();
    url = await createTestDatabase();
    pool = await migrated(url);
    proxy = new FaultyProxy(Number(new URL(url).port));
    await proxy.start();
  });
  after(async () => {
    await stopWorkers();
    await proxy?.stop();
    await pool?.end();
  });

  it('replaces a half-open listener connection and picks up work without the safety poll', async () => {
    const proxied = proxy.url(new URL(url).pathname.slice(1));
    const sampler = new ConnectionSampler(url, 20);
    await sampler.start();
    const w = await startWorker(proxied, { hello: async () => 'hi' }, {
      database: { poolSize: 2, listenerCheckMs: 500, statementTimeoutMs: 1000 },
      worker: { pollMs: 600_000, heartbeatMs: 300, rescueAfterMs: 60_000 },
    });
    const warm = await w.addJob({ task: 'hello' });
    await waitFor('a first job', async () => (await pool.query('SELECT status FROM sluice.jobs WHERE id = $1', [warm])).rows[0].status === 'completed');
    const reconnectsBefore = (await w.metrics.registry.getSingleMetric('sluice_listener_reconnects_total')!.get()).values[0]!.value;
    expect(proxy.freeze()).to.be.at.least(2);
    const frozenAt = Date.now();
    await waitFor('the listener to notice and reconnect', async () =>
      (await w.metrics.registry.getSingleMetric('sluice_listener_reconnects_total')!.get()).values[0]!.value > reconnectsBefore, 30_000);
    // enqueued directly: only the new listener connection can hear of it
    const id = String((await pool.query("SELECT sluice.add_job('hello') AS id")).rows[0].id);
    await waitFor('the job to run through fresh connections', async () =>
      (await pool.query('SELECT status FROM sluice.jobs WHERE id = $1', [id])).rows[0].status === 'completed', 60_000);
    const recoverySeconds = (Date.now() - frozenAt) / 1000;
    await waitFor('frozen backends to be ended', async () => (await sampler.sample()) <= 3, 30_000);
    await sampler.stop();
    report({ scenario: 'network frozen (TCP proxy stops forwarding, keeps sockets open); listenerCheckMs 500', jobs: 2, completed: 2, recoverySeconds, peakConnections: sampler.peak, budget: 3 });
  });
});
