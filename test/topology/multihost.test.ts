// A multi-host database.url on a real primary and streaming standby (PostgreSQL 15): the standby is
// named first, so the worker must pass it by; when the primary goes away (stopped, or made
// read-only in place, as a demotion without a restart leaves it) the worker is not ready, says
// why, logs each change of state once, and follows the promoted standby by itself.
import { expect } from 'chai';
import pg from 'pg';
import { migrate } from '../../src/db/migrate.js';
import { readiness } from '../../src/http/server.js';
import type { Worker } from '../../src/worker/worker.js';
import { waitFor } from '../support/db.js';
import { capturingLogger, faultsEnabled } from '../support/faults.js';
import { queryOnce, startStandbyPair, type PgServer, type StandbyPair } from '../support/standby.js';
import { PG15_BIN_DIR, requireTool } from '../support/tools.js';
import { startWorker, stopWorkers } from '../support/worker.js';

const sluiceSessions = async (server: PgServer) =>
  (await queryOnce<{ n: number }>(server.url(), "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'sluice%'"))[0]!.n;
const status = async (url: string, id: string) => (await queryOnce<{ status: string }>(url, 'SELECT status FROM sluice.jobs WHERE id = $1', [id]))[0]?.status;
const metric = async (w: Worker, name: string) => Number(new RegExp(`^${name} (\\d+)`, 'm').exec(await w.metrics.registry.metrics())?.[1] ?? NaN);

describe('topology: a multi-host database.url across a promotion', function () {
  this.timeout(180_000);
  let pair: StandbyPair | undefined;

  beforeEach(async function () {
    if (!faultsEnabled()) this.skip();
    requireTool(this, 'pg_basebackup', `${PG15_BIN_DIR}/pg_basebackup`);
    pair = await startStandbyPair();
    const admin = new pg.Pool({ connectionString: pair.primary.url(), max: 1 });
    await migrate(admin, 'sluice');
    await admin.end();
    await waitFor('the schema on the standby', async () => (await queryOnce(pair!.standby.url(), "SELECT to_regclass('sluice.jobs') AS t"))[0]!.t);
  });
  afterEach(async () => {
    await stopWorkers();
    await pair?.destroy();
    pair = undefined;
  });

  const config = { worker: { pollMs: 500, heartbeatMs: 300 }, database: { listenerCheckMs: 500, connectionTimeoutMs: 2000 } };
  /** The standby first: a worker that took the first host that answers would land on it. */
  const url = () => `postgres://postgres@127.0.0.1:${pair!.standby.port},127.0.0.1:${pair!.primary.port}/postgres?target_session_attrs=read-write`;
  const messages = (lines: string[]) => lines.map((l) => JSON.parse(l) as { msg: string; part?: string }).filter((l) => !l.part).map((l) => l.msg);

  it('passes the standby by, and follows the promoted standby when the primary stops; /readyz fails meanwhile', async () => {
    const { log, lines } = capturingLogger();
    const w = await startWorker(url(), { hello: async () => 'hi' }, config, log);
    const first = await w.addJob({ task: 'hello' });
    await waitFor('a job on the primary', async () => (await status(pair!.primary.url(), first)) === 'completed');
    expect(await sluiceSessions(pair!.standby), 'no connection kept on the standby').to.equal(0);
    expect(await metric(w, 'sluice_database_failovers_total')).to.equal(0);

    await pair!.primary.stop('immediate');
    await waitFor('the worker to be not ready', () => !w.ready, 30_000);
    await waitFor('/readyz to say why', () => /^no writable primary among/.test(readiness(w).reason ?? ''), 30_000);
    expect(readiness(w).reason).to.contain(`127.0.0.1:${pair!.standby.port}, 127.0.0.1:${pair!.primary.port}`);
    expect(await metric(w, 'sluice_database_primary_reachable')).to.equal(0);
    // several passes over both hosts go by while nothing is promoted
    await waitFor('several failed listener attempts', async () => (await metric(w, 'sluice_listener_connect_failures_total')) >= 4, 30_000);

    await pair!.promote();
    await waitFor('the worker to be ready again by itself', () => w.ready, 30_000);
    const after = await w.addJob({ task: 'hello' });
    await waitFor('a job on the promoted standby', async () => (await status(pair!.standby.url(), after)) === 'completed', 30_000);
    expect(await metric(w, 'sluice_database_failovers_total')).to.equal(1);
    expect(await metric(w, 'sluice_database_primary_reachable')).to.equal(1);
    const states = messages(lines).filter((m) => /^(database primary|no writable primary)/.test(m));
    expect(states, 'one line per state change, none per attempt').to.have.length(3);
    expect(states[0]).to.equal(`database primary lost at 127.0.0.1:${pair!.primary.port}; trying the hosts in order`);
    expect(states[1]).to.equal(`no writable primary reachable among 127.0.0.1:${pair!.standby.port}, 127.0.0.1:${pair!.primary.port}; searching with back-off`);
    expect(states[2]).to.match(new RegExp(`^database primary found at 127\\.0\\.0\\.1:${pair!.standby.port} after \\d+\\.\\d s$`));
  });

  it('leaves a primary made read-only in place (25006): no connection stays on it', async () => {
    const { log, lines } = capturingLogger();
    const w = await startWorker(url(), { hello: async () => 'hi' }, { ...config, database: { ...config.database, poolSize: 3 }, worker: { ...config.worker, concurrency: 6 } }, log);
    const ids = await w.addJobs(Array.from({ length: 50 }, () => ({ task: 'hello' })));
    await waitFor('the jobs on the primary', async () => (await status(pair!.primary.url(), ids.at(-1)!)) === 'completed');
    expect(await sluiceSessions(pair!.primary)).to.be.at.least(2);

    // a demotion that keeps the server up: every session's next write fails with 25006
    await queryOnce(pair!.primary.url(), 'ALTER SYSTEM SET default_transaction_read_only = on');
    await queryOnce(pair!.primary.url(), 'SELECT pg_reload_conf()');
    await pair!.promote();
    // the first writes after the demotion fail with 25006; the worker moves on by itself
    const after = await waitFor('a job added on the new primary', () => w.addJob({ task: 'hello' }), 30_000, 100);
    await waitFor('a job on the promoted standby', async () => (await status(pair!.standby.url(), after)) === 'completed', 30_000);
    await waitFor('no sluice connection left on the read-only server', async () => (await sluiceSessions(pair!.primary)) === 0, 30_000);
    await waitFor('ready', () => w.ready, 30_000);
    expect(await metric(w, 'sluice_database_failovers_total')).to.equal(1);
    // whichever came first, a write refused with 25006 (then the host is suspected) or a new
    // connection's check, the worker saw the old primary as read-only, not as gone
    expect(lines.filter((l) => /read-only transaction|is not a writable primary \(read-only\)/.test(l)).length, 'the server seen as read-only').to.be.at.least(1);
  });
});
