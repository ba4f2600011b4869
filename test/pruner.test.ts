import { expect } from 'chai';
import pg from 'pg';
import { Pruner } from '../src/maintenance/pruner.js';
import { loadQueries } from '../src/db/queries.js';
import { silentLogger } from '../src/observe/logger.js';
import { createTestDatabase } from './support/db.js';
import { migrated } from './support/worker.js';

describe('pruner', () => {
  let pool: pg.Pool;
  before(async () => {
    pool = await migrated(await createTestDatabase());
  });
  after(() => pool.end());

  const day = 86_400_000;
  const pruner = (keepCompletedMs: number, keepFailedMs: number) =>
    new Pruner({ pool, queries: loadQueries('sluice'), keepCompletedMs, keepFailedMs, everyMs: 60_000, batchSize: 7, log: silentLogger() });

  async function seed(): Promise<void> {
    await pool.query('TRUNCATE sluice.jobs');
    await pool.query(`INSERT INTO sluice.jobs (task, status, finished_at)
      SELECT 'old_done', 'completed', now() - interval '2 days' FROM generate_series(1, 20)
      UNION ALL SELECT 'new_done', 'completed', now() - interval '1 hour' FROM generate_series(1, 5)
      UNION ALL SELECT 'old_failed', 'failed', now() - interval '8 days' FROM generate_series(1, 3)
      UNION ALL SELECT 'old_cancelled', 'cancelled', now() - interval '8 days' FROM generate_series(1, 2)
      UNION ALL SELECT 'new_failed', 'failed', now() - interval '1 day' FROM generate_series(1, 4)`);
    await pool.query("INSERT INTO sluice.jobs (task, run_at) VALUES ('waiting', now() - interval '30 days')");
  }
  const remaining = async () =>
    Object.fromEntries((await pool.query('SELECT task, count(*)::int AS n FROM sluice.jobs GROUP BY task')).rows.map((r) => [r.task, r.n]));

  it('deletes finished jobs past their retention, in batches, and nothing else', async () => {
    await seed();
    expect(await pruner(day, 7 * day).pruneNow()).to.equal(25);
    expect(await remaining()).to.deep.equal({ new_done: 5, new_failed: 4, waiting: 1 });
  });

  it('keeps completed jobs forever at keepCompletedMs -1, failed ones at keepFailedMs 0', async () => {
    await seed();
    expect(await pruner(-1, 7 * day).pruneNow()).to.equal(5);
    expect(await remaining()).to.deep.include({ old_done: 20, new_done: 5 });
    expect(await pruner(-1, 0).pruneNow()).to.equal(0);
    expect(await remaining()).to.deep.include({ old_done: 20, new_done: 5, new_failed: 4 });
  });

  it('at keepCompletedMs 0 (workers delete at completion) takes every completed job left from before', async () => {
    await seed();
    expect(await pruner(0, 7 * day).pruneNow()).to.equal(30);
    expect(await remaining()).to.deep.equal({ new_failed: 4, waiting: 1 });
  });

  it('runs one pruner at a time: two at once delete each job once', async () => {
    await seed();
    const [a, b] = await Promise.all([pruner(day, 7 * day).pruneNow(), pruner(day, 7 * day).pruneNow()]);
    const left = await remaining();
    expect(left).to.deep.equal({ new_done: 5, new_failed: 4, waiting: 1 });
    // 25 were due; each deleted exactly once, by one pruner or the other
    expect(a + b).to.equal(25);
  });
});
