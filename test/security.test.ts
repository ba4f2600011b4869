import { expect } from 'chai';
import pg from 'pg';
import { applyRoles } from '../src/db/roles.js';
import { addJob } from '../src/enqueue.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { migrated, startWorker, stopWorkers } from './support/worker.js';

describe('roles and bad rows', () => {
  let url: string;
  let pool: pg.Pool;
  const as = (user: string) => {
    const u = new URL(url);
    u.username = user;
    return new pg.Pool({ connectionString: u.toString(), max: 2 });
  };
  let alice: pg.Pool;
  let bob: pg.Pool;

  before(async () => {
    url = await createTestDatabase();
    pool = await migrated(url);
    const roles = await applyRoles(pool, 'sluice');
    expect(roles).to.deep.equal({ producer: 'sluice_producer', worker: 'sluice_worker', producers: [], workers: [] });
    // applying twice is harmless
    await applyRoles(pool, 'sluice');
    const suffix = String(process.pid);
    for (const [name, role] of [[`alice_${suffix}`, 'sluice_producer'], [`bob_${suffix}`, 'sluice_producer'], [`wrk_${suffix}`, 'sluice_worker']]) {
      await pool.query(`DROP ROLE IF EXISTS ${name}`);
      await pool.query(`CREATE ROLE ${name} LOGIN IN ROLE ${role}`);
    }
    alice = as(`alice_${suffix}`);
    bob = as(`bob_${suffix}`);
  });
  after(async () => {
    await stopWorkers();
    await alice.end();
    await bob.end();
    for (const name of ['alice', 'bob', 'wrk']) await pool.query(`DROP ROLE IF EXISTS ${name}_${process.pid}`).catch(() => undefined);
    await pool.end();
  });

  const denied = async (db: pg.Pool, sql: string, params: unknown[] = []) => {
    try {
      await db.query(sql, params);
    } catch (err) {
      return (err as Error).message;
    }
    return 'allowed';
  };

  it('a producer enqueues and reads its own jobs, and can touch nothing else', async () => {
    const mine = await addJob(alice, { task: 'report', payload: { month: 11 } });
    const theirs = await addJob(bob, { task: 'report' });
    const seen = await alice.query('SELECT id::text FROM sluice.my_jobs');
    expect(seen.rows.map((r) => r.id)).to.deep.equal([mine]);
    expect(await denied(alice, 'SELECT * FROM sluice.jobs')).to.match(/permission denied for table jobs/);
    expect(await denied(alice, "UPDATE sluice.jobs SET status = 'cancelled' WHERE id = $1", [theirs])).to.match(/permission denied/);
    expect(await denied(alice, 'DELETE FROM sluice.jobs WHERE id = $1', [theirs])).to.match(/permission denied/);
    expect(await denied(alice, "INSERT INTO sluice.jobs (task) VALUES ('x')")).to.match(/permission denied/);
    expect(await denied(alice, 'SELECT sluice.cancel_job($1)', [theirs])).to.match(/permission denied for function cancel_job/);
    expect(await denied(alice, 'SELECT sluice.retry_job($1)', [theirs])).to.match(/permission denied for function retry_job/);
    expect(await denied(alice, 'SELECT * FROM sluice.workers')).to.match(/permission denied/);
    const r = await pool.query('SELECT status, created_by FROM sluice.jobs WHERE id = $1', [theirs]);
    expect(r.rows[0]).to.deep.equal({ status: 'queued', created_by: `bob_${process.pid}` });
  });

  it('a worker role runs jobs', async () => {
    const u = new URL(url);
    u.username = `wrk_${process.pid}`;
    const w = await startWorker(u.toString(), { report: async () => ({ ok: true }) });
    await waitFor('the producers\' jobs to complete', async () => {
      const r = await pool.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE status = 'completed'");
      return r.rows[0].n === 2;
    });
    expect(w.stats().inFlight).to.equal(0);
  });

  it('refuses an oversized payload with a clear error, from SQL and by hand', async () => {
    const big = JSON.stringify({ blob: 'x'.repeat(1_100_000) });
    const before = (await pool.query('SELECT count(*)::int AS n FROM sluice.jobs')).rows[0].n;
    expect(await denied(pool, "SELECT sluice.add_job('t', $1::jsonb)", [big])).to.match(/payload is \d+ bytes; at most 1048576 \(1 MiB\) is accepted/);
    expect(await denied(pool, "INSERT INTO sluice.jobs (task, payload) VALUES ('t', $1::jsonb)", [big])).to.match(/jobs_payload_size/);
    expect((await pool.query('SELECT count(*)::int AS n FROM sluice.jobs')).rows[0].n).to.equal(before);
  });
});

describe('roles after a later migration', () => {
  it('keep a function the migration added away from PUBLIC, and the worker role can run it', async () => {
    const { migrate } = await import('../src/db/migrate.js');
    const url = await createTestDatabase();
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    try {
      // an installation made at version 6, with its roles, later upgraded by `sluice migrate`
      await migrate(pool, 'sluice', { toVersion: 6 });
      await applyRoles(pool, 'sluice');
      await migrate(pool, 'sluice');
      const granted = await pool.query("SELECT has_function_privilege('sluice_worker', 'sluice.run_job_now(bigint)', 'EXECUTE') AS ok");
      expect(granted.rows[0].ok).to.equal(true);
      // run_job_now came with migration 7, after the roles were applied: nobody but the roles may run it
      const publicToo = await pool.query(
        "SELECT count(*)::int AS n FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a WHERE p.pronamespace = 'sluice'::regnamespace AND a.grantee = 0",
      );
      expect(publicToo.rows[0].n, 'functions executable by PUBLIC').to.equal(0);
    } finally {
      await pool.end();
    }
  });
});
