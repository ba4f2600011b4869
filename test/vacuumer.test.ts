import { expect } from 'chai';
import pg from 'pg';
import { loadQueries } from '../src/db/queries.js';
import { silentLogger } from '../src/observe/logger.js';
import { Vacuumer } from '../src/maintenance/vacuumer.js';
import { applyRoles } from '../src/db/roles.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { migrated } from './support/worker.js';

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  Plans?: PlanNode[];
}

describe('vacuumer', () => {
  let url: string;
  let pool: pg.Pool;
  const worker = `vac_${process.pid}`;

  before(async () => {
    url = await createTestDatabase();
    pool = await migrated(url);
    // the dead rows counted here are this test's to clear, not autovacuum's
    await pool.query('ALTER TABLE sluice.jobs SET (autovacuum_enabled = false)');
    // finished jobs the churn below never touches, so that its growth stays below twice the size
    // the statistics know and only dead rows decide, until a test truncates the table
    await pool.query("INSERT INTO sluice.jobs (task, status, finished_at) SELECT 'filler', 'completed', now() FROM generate_series(1, 20000)");
    await pool.query('VACUUM ANALYZE sluice.jobs');
    await applyRoles(pool, 'sluice');
    await pool.query(`DROP ROLE IF EXISTS ${worker}`);
    await pool.query(`CREATE ROLE ${worker} LOGIN IN ROLE sluice_worker`);
  });
  after(async () => {
    await pool.query(`DROP ROLE IF EXISTS ${worker}`).catch(() => undefined);
    await pool.end();
  });

  const vacuumer = (p: pg.Pool, deadRows: number) =>
    new Vacuumer({ pool: p, queries: loadQueries('sluice'), deadRows, checkEveryMs: 60_000, timeoutMs: 60_000, log: silentLogger() });
  const deadRows = async () =>
    Number((await pool.query("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'sluice.jobs'::regclass")).rows[0].n_dead_tup);

  /** 3,000 jobs claimed and completed: 6,000 dead row versions, once the statistics show them. */
  async function churn(): Promise<void> {
    await pool.query("INSERT INTO sluice.jobs (task) SELECT 'churn' FROM generate_series(1, 3000)");
    await pool.query("UPDATE sluice.jobs SET status = 'running', locked_by = 'w1' WHERE status = 'queued'");
    await pool.query("UPDATE sluice.jobs SET status = 'completed', finished_at = now() WHERE status = 'running'");
    await waitFor('the statistics to count the dead rows', async () => (await deadRows()) >= 6000, 30_000);
  }

  it('vacuums the jobs table once dead rows pass the threshold, and not before', async () => {
    await churn();
    expect(await vacuumer(pool, 1_000_000).vacuumIfNeeded()).to.equal('not needed');
    expect(await vacuumer(pool, 5000).vacuumIfNeeded()).to.equal('vacuumed');
    await waitFor('the statistics to show the table vacuumed', async () => (await deadRows()) < 6000, 30_000);
    const vacuumed = await pool.query("SELECT last_vacuum FROM pg_stat_user_tables WHERE relid = 'sluice.jobs'::regclass");
    expect(vacuumed.rows[0].last_vacuum).to.not.equal(null);
  });

  it('leaves the table alone while another worker vacuums it', async () => {
    await churn();
    const other = await pool.connect();
    try {
      await other.query("SELECT pg_advisory_lock(hashtextextended('sluice.vacuum.sluice', 0))");
      expect(await vacuumer(pool, 5000).vacuumIfNeeded()).to.equal('busy');
      await other.query("SELECT pg_advisory_unlock(hashtextextended('sluice.vacuum.sluice', 0))");
    } finally {
      other.release();
    }
    expect(await vacuumer(pool, 5000).vacuumIfNeeded()).to.equal('vacuumed');
  });

  // A worker prepares its statements once per connection and keeps their generic plans; one made
  // while the table was nearly empty scans the whole table, however big it has grown since.
  it('makes statements prepared on a nearly empty table re-plan once the table has grown', async () => {
    await pool.query('TRUNCATE sluice.jobs');
    await pool.query('VACUUM ANALYZE sluice.jobs');
    const q = loadQueries('sluice');
    const completion = q.complete_jobs.config({ completions: JSON.stringify([{ id: 1, token: 1, result: null }]) });
    const claim = q.claim_jobs_one_queue.config({ queue: 'default', limit: 10, windowMs: 0, tasks: ['grow'], workerId: 'w1' });
    const session = await pool.connect();
    /** The scan types by which the prepared statement's current plan reads sluice.jobs. */
    const scans = async (name: string, values: unknown[]): Promise<string[]> => {
      // EXECUTE takes no bind parameters: literals, arrays in PostgreSQL's text form
      const literals = values.map((v) => session.escapeLiteral(Array.isArray(v) ? `{${v.join(',')}}` : String(v))).join(', ');
      const res = await session.query(`EXPLAIN (FORMAT JSON) EXECUTE ${name}(${literals})`);
      const out: string[] = [];
      const walk = (node: PlanNode) => {
        if (node['Relation Name'] === 'jobs' && node['Node Type'] !== 'ModifyTable') out.push(node['Node Type']);
        node.Plans?.forEach(walk);
      };
      walk(res.rows[0]['QUERY PLAN'][0].Plan);
      return out;
    };
    try {
      // the plan a long-lived connection settles on: generic, made at its first use
      await session.query('SET plan_cache_mode = force_generic_plan');
      await session.query(`PREPARE completion AS ${completion.text}`);
      await session.query(`PREPARE claim AS ${claim.text}`);
      expect(await vacuumer(pool, 0).vacuumIfNeeded()).to.equal('not needed');
      const before = [...(await scans('completion', completion.values!)), ...(await scans('claim', claim.values!))].join(' ');
      expect(before, 'planned on an empty table').to.include('Seq Scan');

      await pool.query("INSERT INTO sluice.jobs (task) SELECT 'grow' FROM generate_series(1, 20000)");
      const still = [...(await scans('completion', completion.values!)), ...(await scans('claim', claim.values!))].join(' ');
      expect(still, 'kept while the table grows').to.include('Seq Scan');

      expect(await vacuumer(pool, 0).vacuumIfNeeded()).to.equal('analyzed');
      const after = [...(await scans('completion', completion.values!)), ...(await scans('claim', claim.values!))].join(' ');
      expect(after, 'after the vacuumer ran').to.not.include('Seq Scan');
      expect(after).to.include('Index Scan');
      expect(await vacuumer(pool, 0).vacuumIfNeeded(), 'once the statistics know the size').to.equal('not needed');
    } finally {
      await session.query('DEALLOCATE ALL').catch(() => undefined);
      session.release(true);
    }
  });

  it('stands aside when its role does not own the table (least-privilege worker role)', async () => {
    const u = new URL(url);
    u.username = worker;
    const asWorker = new pg.Pool({ connectionString: u.toString(), max: 1 });
    try {
      expect(await vacuumer(asWorker, 1).vacuumIfNeeded()).to.equal('not allowed');
    } finally {
      await asWorker.end();
    }
  });
});
