// The seed scenario reversed: many workers' worth of jobs against a server with few connections.
import { expect } from 'chai';
import pg from 'pg';
import type { JobContext } from '../../src/tasks.js';
import type { LocalCluster } from '../../src/embedded/cluster.js';
import { destroyCluster, startCluster, waitFor } from '../support/db.js';
import { capturingLogger, ConnectionSampler, createAppRole, faultsEnabled } from '../support/faults.js';
import { migrated, startWorker, statusCounts, stopWorkers } from '../support/worker.js';
import { report } from '../support/chaos.js';

describe('chaos: connections stay bounded', function () {
  let cluster: LocalCluster;
  let appUrl: string;
  let admin: pg.Pool;

  before(async function () {
    if (!faultsEnabled()) this.skip();
    cluster = await startCluster({ max_connections: 20 });
    admin = await migrated(cluster.url(), 2);
    appUrl = await createAppRole(cluster.url());
    await admin.query('GRANT ALL ON SCHEMA sluice TO app; GRANT ALL ON ALL TABLES IN SCHEMA sluice TO app; GRANT ALL ON ALL SEQUENCES IN SCHEMA sluice TO app');
    await admin.query('CREATE TABLE public.effects (job_id bigint PRIMARY KEY); GRANT ALL ON public.effects TO app');
  });
  after(async () => {
    await stopWorkers();
    await admin?.end();
    if (cluster) await destroyCluster(cluster);
  });

  it('20,000 jobs at concurrency 50 with poolSize 5 on max_connections 20: never above 6 connections', async function () {
    this.timeout(180_000);
    const sampler = new ConnectionSampler(cluster.url(), 10);
    await sampler.start();
    const { log, lines } = capturingLogger();
    const w = await startWorker(
      appUrl,
      {
        mixed: async (p: { i: number }, ctx: JobContext) => {
          if (p.i % 5 === 0) throw new Error(`job ${p.i} throws by design`);
          if (p.i % 3 === 0) {
            await ctx.db.transaction((tx) => tx.query('INSERT INTO public.effects VALUES ($1)', [ctx.job.id]));
          } else if (p.i % 7 === 0) {
            await ctx.db.query('SELECT pg_sleep(0.002)');
          }
          return { i: p.i };
        },
      },
      { database: { poolSize: 5 }, worker: { concurrency: 50, retryBaseMs: 0 } },
      log,
    );
    // two bulk calls: one call takes at most 10,000 jobs
    for (const first of [0, 10_000]) {
      await w.addJobs(Array.from({ length: 10_000 }, (_, i) => ({ task: 'mixed', payload: { i: first + i }, maxAttempts: 2 })));
    }
    await waitFor('every job to finish', async () => {
      const c = await statusCounts(admin);
      return (c.completed ?? 0) + (c.failed ?? 0) === 20_000;
    }, 150_000, 200);
    await sampler.sample();
    await sampler.stop();
    const c = await statusCounts(admin);
    expect(c).to.deep.equal({ completed: 16_000, failed: 4_000 });
    const effects = await admin.query('SELECT count(*)::int AS n FROM public.effects');
    expect(effects.rows[0].n).to.be.at.most(16_000).and.at.least(1);
    expect(sampler.samples).to.be.greaterThan(10);
    expect(sampler.peak, 'peak sluice connections').to.be.at.most(6);
    expect(lines.join('')).to.not.match(/too many connections|remaining connection slots/);
    report({ scenario: 'seed reversed: max_connections 20, concurrency 50, poolSize 5, a fifth of handlers throw', jobs: 20_000, completed: c.completed!, failed: c.failed, peakConnections: sampler.peak, budget: 6 });
  });
});
