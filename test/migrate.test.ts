import { expect } from 'chai';
import { spawn } from 'node:child_process';
import pg from 'pg';
import { migrate, currentVersion, expectedVersion } from '../src/db/migrate.js';
import { loadMigrations } from '../src/db/sql.js';

const ALL = loadMigrations('sluice').map((m) => m.version);
import { createTestDatabase } from './support/db.js';

describe('migrations', () => {
  let url: string;
  let pool: pg.Pool;

  before(async () => {
    url = await createTestDatabase();
    pool = new pg.Pool({ connectionString: url, max: 3 });
  });
  after(() => pool.end());

  it('apply once, then again as a no-op, and record the version', async () => {
    expect(await currentVersion(pool, 'sluice')).to.equal(0);
    const first = await migrate(pool, 'sluice');
    expect(first.applied).to.deep.equal(ALL);
    expect(ALL.length).to.be.at.least(3);
    const second = await migrate(pool, 'sluice');
    expect(second.applied).to.deep.equal([]);
    expect(second.version).to.equal(expectedVersion());
    expect(await currentVersion(pool, 'sluice')).to.equal(expectedVersion());
  });

  it('apply each file once when two processes migrate at the same moment', async () => {
    const run = () =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/migrate-child.ts', url, 'concurrent'], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.on('exit', (code) => resolve({ code, out }));
      });
    const [a, b] = await Promise.all([run(), run()]);
    expect(a.code).to.equal(0);
    expect(b.code).to.equal(0);
    const applied = [...JSON.parse(a.out).applied, ...JSON.parse(b.out).applied];
    expect(applied.sort((x: number, y: number) => x - y)).to.deep.equal(ALL);
    expect(a.out === b.out).to.equal(false);
    const rows = await pool.query('SELECT version FROM concurrent.migrations ORDER BY version');
    expect(rows.rows.map((r) => r.version)).to.deep.equal(ALL);
  });

  it('keep schemas apart and refuse a schema name that is not an identifier', async () => {
    await migrate(pool, 'other_app');
    // the functions live in the named schema, with the public signature
    for (const schema of ['sluice', 'other_app']) {
      const r = await pool.query(
        `SELECT p.oid::regprocedure::text AS signature FROM pg_proc p WHERE p.pronamespace = $1::regnamespace AND p.proname IN ('add_job', 'add_jobs') ORDER BY 1`,
        [schema],
      );
      expect(r.rows.map((x) => x.signature)).to.deep.equal([
        `${schema}.add_job(text,jsonb,text,timestamp with time zone,integer,integer,text,text,text)`,
        `${schema}.add_jobs(jsonb)`,
      ]);
    }
    for (const bad of ['Bad', 'x;drop table y', '1abc', '', 'a'.repeat(49)]) {
      let err: Error | undefined;
      try {
        await migrate(pool, bad);
      } catch (e) {
        err = e as Error;
      }
      expect(err?.message, bad).to.match(/is not a valid schema name/);
    }
  });
});
