// sluice behind Debian's PgBouncer 1.18 in transaction mode (database.pooler=transaction), in
// front of a throwaway cluster. The bouncer is started WITHOUT ignore_startup_parameters for
// sluice's settings (only extra_float_digits): 1.18 refuses a client that sends `options` or
// `statement_timeout` at startup, so every test here also proves that sluice sends none. Its
// default_pool_size is below sluice's poolSize, so sluice's clients share server connections, which
// is where named prepared statements and session state would break.
import { expect } from 'chai';
import pg from 'pg';
import type { LocalCluster } from '../../src/embedded/cluster.js';
import { addJob } from '../../src/enqueue.js';
import { PermanentError } from '../../src/errors.js';
import type { JobContext } from '../../src/tasks.js';
import { destroyCluster, startCluster, waitFor } from '../support/db.js';
import { capturingLogger, faultsEnabled } from '../support/faults.js';
import { startPgBouncer, type PgBouncer } from '../support/pgbouncer.js';
import { queryOnce } from '../support/standby.js';
import { PGBOUNCER_BIN, requireTool } from '../support/tools.js';
import { migrated, startWorker, statusCounts, stopWorkers } from '../support/worker.js';

/** Errors that mean sluice relied on session state a transaction pooler does not keep. */
const SESSION_ERRORS = /prepared statement|42P05|26000|unsupported startup parameter|cannot execute LISTEN|advisory/i;

describe('topology: sluice behind PgBouncer 1.18 in transaction mode', function () {
  this.timeout(180_000);
  let cluster: LocalCluster;
  let bouncer: PgBouncer;
  let direct: pg.Pool;

  before(async function () {
    if (!faultsEnabled()) this.skip();
    requireTool(this, 'pgbouncer', PGBOUNCER_BIN);
    cluster = await startCluster();
    direct = await migrated(cluster.url());
    await direct.query(`CREATE SCHEMA chaos;
      CREATE TABLE chaos.effects (job_id bigint PRIMARY KEY, n int NOT NULL);
      CREATE TABLE chaos.starts (job_id bigint NOT NULL)`);
    bouncer = await startPgBouncer({
      targetPort: cluster.port,
      defaultPoolSize: 2,
      maxClientConn: 200,
      settings: { ignore_startup_parameters: 'extra_float_digits', server_login_retry: 1 },
    });
  });
  afterEach(async () => {
    await stopWorkers();
    await direct?.query('TRUNCATE sluice.jobs, sluice.workers, chaos.effects, chaos.starts');
  });
  after(async () => {
    await direct?.end();
    await bouncer?.destroy();
    if (cluster) await destroyCluster(cluster);
  });

  const pooled = (extra: { database?: Record<string, unknown>; worker?: Record<string, unknown> } = {}) => ({
    database: { url: bouncer.url(), listenUrl: cluster.url(), pooler: 'transaction' as const, poolSize: 4, ...extra.database },
    worker: { concurrency: 8, ...extra.worker },
  });
  const job = async (id: string) => (await direct.query('SELECT * FROM sluice.jobs WHERE id = $1', [id])).rows[0];

  it('runs, retries and fails jobs through the pooler, with no prepared-statement or session errors', async () => {
    const { log, lines } = capturingLogger('debug');
    const w = await startWorker(bouncer.url(), {
      greet: async (p: { name: string }) => ({ greeting: `hello ${p.name}` }),
      flaky: async (_p: unknown, ctx: JobContext) => {
        if (ctx.job.attempt < 3) throw new Error(`attempt ${ctx.job.attempt} broke`);
        return 'third time';
      },
      permanent: async () => {
        throw new PermanentError('no');
      },
    }, pooled({ worker: { retryBaseMs: 20, retryMaxMs: 50 } }), log);
    const ids = await Promise.all([
      w.addJob({ task: 'greet', payload: { name: 'pooler' } }),
      w.addJob({ task: 'flaky' }),
      w.addJob({ task: 'permanent' }),
    ]);
    // enough at once that sluice's four clients share the bouncer's two server connections
    await w.addJobs(Array.from({ length: 300 }, (_, n) => ({ task: 'greet', payload: { name: `n${n}` } })));
    // one reading: between two, a failed attempt could go from running back to queued unseen
    await waitFor('every job final', async () => {
      const c = await statusCounts(direct);
      return c.queued === undefined && c.running === undefined;
    }, 30_000);
    expect((await job(ids[0]!)).result).to.deep.equal({ greeting: 'hello pooler' });
    expect(await job(ids[1]!)).to.include({ status: 'completed', attempts: 3 });
    expect(await job(ids[2]!)).to.include({ status: 'failed', attempts: 1 });
    expect(lines.filter((l) => SESSION_ERRORS.test(l))).to.deep.equal([]);
    expect(w.ready).to.equal(true);
  });

  it('commits handler writes with the completion, and limits each transaction with SET LOCAL, never the session', async () => {
    const w = await startWorker(bouncer.url(), {
      write: async (p: { fail?: boolean }, ctx: JobContext) => {
        const inTx = await ctx.db.transaction(async (tx) => (await tx.query("SELECT current_setting('statement_timeout') AS t")).rows[0].t as string);
        // after the transaction the server connection goes back to the bouncer with nothing set
        const outside = (await ctx.db.query<{ t: string }>("SELECT current_setting('statement_timeout') AS t")).rows[0]!.t;
        return ctx.completeInTransaction(async (tx) => {
          await tx.query('INSERT INTO chaos.effects VALUES ($1, 1)', [ctx.job.id]);
          if (p.fail) throw new Error('failed after writing');
          return { inTx, outside };
        });
      },
    }, pooled({ database: { statementTimeoutMs: 4321 } }));
    const ok = await w.addJob({ task: 'write' });
    const bad = await w.addJob({ task: 'write', payload: { fail: true }, maxAttempts: 1 });
    await waitFor('both final', async () => (await job(ok)).status === 'completed' && (await job(bad)).status === 'failed', 30_000);
    expect((await job(ok)).result).to.deep.equal({ inTx: '4321ms', outside: '0' });
    expect((await direct.query('SELECT job_id::text AS id FROM chaos.effects')).rows).to.deep.equal([{ id: ok }]);
  });

  it('starts a delayed job at its run_at: notifications come through database.listenUrl', async () => {
    const w = await startWorker(bouncer.url(), { later: async () => 'on time' }, pooled({ worker: { pollMs: 600_000 } }));
    const runAt = new Date(Date.now() + 1500);
    const id = await w.addJob({ task: 'later', runAt });
    await waitFor('the delayed job to complete', async () => (await job(id)).status === 'completed', 20_000);
    expect((await job(id)).started_at.getTime()).to.be.at.least(runAt.getTime() - 50);
    const listeners = await direct.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'sluice-listener%'");
    expect(listeners.rows[0].n, 'the LISTEN connection goes to PostgreSQL itself').to.equal(1);
  });

  it('without database.listenUrl: warns once, polls every worker.pollMs, and is ready', async () => {
    const { log, lines } = capturingLogger();
    const w = await startWorker(bouncer.url(), { hello: async () => 'polled' }, pooled({ database: { listenUrl: '' }, worker: { pollMs: 100 } }), log);
    const warnings = lines.filter((l) => l.includes('LISTEN cannot work through a transaction pooler'));
    expect(warnings).to.have.length(1);
    expect(JSON.parse(warnings[0]!)).to.include({ level: 40, pollMs: 100 });
    const id = await w.addJob({ task: 'hello' });
    await waitFor('the job found by the poll', async () => (await job(id)).status === 'completed', 10_000);
    expect(w.ready).to.equal(true);
    const listeners = await direct.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'sluice-listener%'");
    expect(listeners.rows[0].n).to.equal(0);
  });

  it('10,000 jobs from four producers with poolSize 4, PgBouncer restarted mid-run: every job completes once, nothing lost', async () => {
    const { log, lines } = capturingLogger();
    const w = await startWorker(bouncer.url(), {
      record: async (_p: { key: string }, ctx: JobContext) => {
        await ctx.db.query('INSERT INTO chaos.starts VALUES ($1)', [ctx.job.id]);
        return ctx.completeInTransaction(async (tx) => {
          await tx.query('INSERT INTO chaos.effects VALUES ($1, 1)', [ctx.job.id]);
          return 'recorded';
        });
      },
    }, pooled({ worker: { concurrency: 16, pollMs: 1000, retryBaseMs: 20, retryMaxMs: 200 }, database: { connectionTimeoutMs: 5000 } }), log);

    const TOTAL = 10_000;
    const PRODUCERS = 4;
    let clientsPeak = 0;
    const sampling = setInterval(() => {
      void queryOnce<{ application_name: string }>(bouncer.adminUrl(), 'SHOW CLIENTS').then((rows) => {
        clientsPeak = Math.max(clientsPeak, rows.filter((r) => r.application_name?.startsWith('sluice')).length);
      }, () => undefined);
    }, 100);
    let producerRetries = 0;
    // each producer has its own pool through the bouncer; a failed add_job is retried once it is
    // known not to have committed (looked up by key on a direct connection)
    const produce = async (p: number) => {
      const pool = new pg.Pool({ connectionString: bouncer.url(), max: 2, application_name: `producer ${p}` });
      pool.on('error', () => undefined);
      try {
        for (let n = 0; n < TOTAL / PRODUCERS; n++) {
          const key = `${p}-${n}`;
          for (;;) {
            try {
              await addJob(pool, { task: 'record', payload: { key } });
              break;
            } catch {
              producerRetries++;
              const found = await direct.query("SELECT 1 FROM sluice.jobs WHERE payload->>'key' = $1", [key]);
              if (found.rowCount) break;
              await new Promise((r) => setTimeout(r, 50));
            }
          }
        }
      } finally {
        await pool.end();
      }
    };
    const producing = Promise.all(Array.from({ length: PRODUCERS }, (_, p) => produce(p)));
    try {
      await waitFor('a quarter of the jobs done', async () => (await statusCounts(direct)).completed >= TOTAL / 4, 120_000, 100);
      await bouncer.restart();
      await producing;
      await waitFor('every job completed', async () => (await statusCounts(direct)).completed === TOTAL, 120_000, 200);
    } finally {
      clearInterval(sampling);
    }

    const keys = await direct.query("SELECT count(DISTINCT payload->>'key')::int AS keys, count(*)::int AS jobs FROM sluice.jobs");
    expect(keys.rows[0], 'one job per key, none lost').to.deep.equal({ keys: TOTAL, jobs: TOTAL });
    const effects = await direct.query('SELECT count(*)::int AS n FROM chaos.effects');
    expect(effects.rows[0].n, 'one effect per job').to.equal(TOTAL);
    const starts = await direct.query('SELECT count(*)::int AS n FROM chaos.starts');
    expect(lines.filter((l) => SESSION_ERRORS.test(l)), 'no prepared-statement or session errors').to.deep.equal([]);
    expect(clientsPeak, 'client connections to the bouncer: at most poolSize').to.be.within(1, 4);
    await waitFor('ready again after the restart', () => w.ready, 30_000);
    console.log(`      ${TOTAL} jobs, ${starts.rows[0].n - TOTAL} extra executions, ${producerRetries} producer retries, peak ${clientsPeak} sluice clients at the bouncer`);
  });
});
