// sluice on a real Patroni cluster (two PostgreSQL 15 nodes, etcd, asynchronous streaming
// replication), under load: three producers call add_job through a multi-host pool, two sluice
// workers run as child processes with both hosts in their URL, and their task records every start
// (chaos.starts) and its effect with the completion (chaos.effects). The scenarios run in order on
// one cluster, each starting from where the previous one left it:
//   1. planned switchover: every job completes, none fails, none starts more often than its attempts;
//   2. the leader SIGKILLed: the replica is promoted and the workers follow; every job is accounted
//      for (completed, possibly rerun because its completion was not replicated), none lost;
//   3. the killed leader comes back as a replica: no sluice connection goes to it.
// Figures go to the console and to $SLUICE_CHAOS_REPORT for docs/reliability.md.
import { appendFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import type pg from 'pg';
import { createPool, endPool } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';
import { addJob, addJobs } from '../../src/enqueue.js';
import { createLogger } from '../../src/observe/logger.js';
import { killWorkers, spawnWorker, type WorkerProcess } from '../support/chaos.js';
import { waitFor } from '../support/db.js';
import { faultsEnabled } from '../support/faults.js';
import { startPatroniCluster, type PatroniCluster, type PatroniNode } from '../support/patroni.js';
import { queryOnce } from '../support/standby.js';
import { ETCD_BIN, PATRONI_BIN, PG15_BIN_DIR, requireTool } from '../support/tools.js';

const PRODUCERS = 3;
const workerEnv = {
  SLUICE_CONCURRENCY: '10',
  SLUICE_POOL_SIZE: '3',
  SLUICE_RESCUE_AFTER_MS: '5000',
  SLUICE_HEARTBEAT_MS: '500',
  SLUICE_POLL_MS: '1000',
  SLUICE_LISTENER_CHECK_MS: '1000',
  SLUICE_CONNECTION_TIMEOUT_MS: '3000',
};

/** Producers enqueueing `record` jobs through one multi-host pool until stopped; every acknowledged key is kept. */
class Producers {
  readonly acknowledged = new Set<string>();
  retries = 0;
  private running = false;
  private loops: Promise<void>[] = [];
  private next = 0;

  constructor(private readonly pool: pg.Pool) {}

  start(): void {
    this.running = true;
    this.loops = Array.from({ length: PRODUCERS }, (_, p) => this.produce(p));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  /** `n` jobs of about `ms` each in one add_jobs call, acknowledged together. */
  async batch(n: number, ms: number): Promise<void> {
    const keys = Array.from({ length: n }, (_, i) => `batch-${this.next++}-${i}`);
    await addJobs(this.pool, keys.map((key) => ({ task: 'record', payload: { key, ms } })));
    for (const k of keys) this.acknowledged.add(k);
  }

  private async produce(p: number): Promise<void> {
    while (this.running) {
      const key = `${p}-${this.next++}`;
      // a failed add_job may still have committed: look the key up before trying again
      for (;;) {
        try {
          await addJob(this.pool, { task: 'record', payload: { key, ms: 10 + Math.floor(Math.random() * 20) } });
          this.acknowledged.add(key);
          break;
        } catch {
          this.retries++;
          await new Promise((r) => setTimeout(r, 100));
          const found = await this.pool.query("SELECT 1 FROM sluice.jobs WHERE payload->>'key' = $1", [key]).catch(() => undefined);
          if (found?.rowCount) {
            this.acknowledged.add(key);
            break;
          }
        }
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

interface Accounting {
  acknowledged: number;
  jobs: number;
  completed: number;
  failed: number;
  missing: number;
  /** Jobs started more often than their attempts count (a start recorded that no claim explains). */
  overStarted: number;
  /** Jobs run more than once: a completion lost with the old leader's last commits, or a rescue. */
  rerun: number;
}

describe('topology: Patroni failover under load (two nodes, two workers, three producers)', function () {
  this.timeout(300_000);
  let cluster: PatroniCluster;
  let pool: pg.Pool;
  let producers: Producers;
  let workers: WorkerProcess[] = [];
  let url: string;

  const leaderUrl = async () => (await cluster.waitForLeader(undefined, 90_000)).url();
  const counts = async () => (await queryOnce<{ status: string; n: number }>(await leaderUrl(), 'SELECT status, count(*)::int AS n FROM sluice.jobs GROUP BY status'))
    .reduce<Record<string, number>>((o, r) => ({ ...o, [r.status]: r.n }), {});
  const completed = async () => (await counts()).completed ?? 0;
  /** The lines each worker logged about the primary since `from` (an index into its lines). */
  const primaryLines = (from: number[]) => workers.map((w, i) => w.lines.slice(from[i]).filter((l) => {
    const msg = l.startsWith('{') ? (JSON.parse(l) as { msg?: string }).msg ?? '' : '';
    return /^(database primary (lost|found) at |no writable primary reachable among )/.test(msg);
  }));
  const marks = () => workers.map((w) => w.lines.length);

  async function account(): Promise<Accounting> {
    const jobs = await queryOnce<{ key: string; status: string; attempts: number; starts: number }>(await leaderUrl(), `
      SELECT j.payload->>'key' AS key, j.status, j.attempts, (SELECT count(*)::int FROM chaos.starts s WHERE s.job_id = j.id) AS starts
      FROM sluice.jobs j`);
    const byKey = new Map(jobs.map((j) => [j.key, j]));
    return {
      acknowledged: producers.acknowledged.size,
      jobs: jobs.length,
      completed: jobs.filter((j) => j.status === 'completed').length,
      failed: jobs.filter((j) => j.status === 'failed').length,
      missing: [...producers.acknowledged].filter((k) => !byKey.has(k)).length,
      overStarted: jobs.filter((j) => j.starts > j.attempts).length,
      rerun: jobs.filter((j) => j.attempts > 1).length,
    };
  }

  async function drain(): Promise<Accounting> {
    await producers.stop();
    await waitFor('every job to finish', async () => {
      const c = await counts();
      return !c.queued && !c.running;
    }, 120_000, 250);
    const a = await account();
    const effects = await queryOnce<{ n: number; extra: number }>(await leaderUrl(),
      'SELECT count(*)::int AS n, (SELECT count(*)::int FROM chaos.effects e WHERE NOT EXISTS (SELECT 1 FROM sluice.jobs j WHERE j.id = e.job_id)) AS extra FROM chaos.effects');
    expect(a.missing, 'acknowledged jobs missing').to.equal(0);
    expect(a.jobs, 'one job per acknowledged key').to.equal(a.acknowledged);
    expect(a.failed, 'no job failed').to.equal(0);
    expect(a.completed).to.equal(a.jobs);
    expect(effects[0], 'one effect per completed job').to.deep.equal({ n: a.completed, extra: 0 });
    return a;
  }

  /** The accounting of this scenario alone: jobs, reruns and over-starts since the previous one. */
  let previous: Accounting | undefined;
  function since(a: Accounting): Record<string, number> {
    const p = previous;
    previous = a;
    return { jobs: a.jobs - (p?.jobs ?? 0), rerun: a.rerun - (p?.rerun ?? 0), overStarted: a.overStarted - (p?.overStarted ?? 0) };
  }
  /** Seconds from losing the primary to finding it again, as each worker logged it. */
  const foundAfterSeconds = (from: number[]) => primaryLines(from).map((lines) =>
    lines.map((l) => JSON.parse(l) as { msg: string; afterMs?: number }).filter((l) => l.msg.startsWith('database primary found')).map((l) => Number(((l.afterMs ?? 0) / 1000).toFixed(1))));

  function report(scenario: string, figures: Record<string, unknown>): void {
    console.log(`      ${scenario}: ${JSON.stringify(figures)}`);
    if (process.env.SLUICE_CHAOS_REPORT) appendFileSync(process.env.SLUICE_CHAOS_REPORT, `${JSON.stringify({ scenario, ...figures })}\n`);
  }

  before(async function () {
    if (!faultsEnabled()) this.skip();
    requireTool(this, 'patroni', PATRONI_BIN);
    requireTool(this, 'etcd', ETCD_BIN);
    requireTool(this, 'pg_basebackup', path.join(PG15_BIN_DIR, 'pg_basebackup'));
    cluster = await startPatroniCluster({ nodes: 2 });
    url = `${cluster.multiHostUrl()}?target_session_attrs=read-write`;
    pool = createPool(
      { url, max: 2 * PRODUCERS, connectionTimeoutMs: 3000, statementTimeoutMs: 10_000, idleInTransactionTimeoutMs: 10_000, applicationName: 'producers', pooler: 'none' },
      createLogger({ level: 'silent', format: 'json' }),
    );
    await migrate(pool, 'sluice');
    await pool.query(`CREATE SCHEMA chaos;
      CREATE TABLE chaos.starts (job_id bigint NOT NULL, worker text NOT NULL, attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
      CREATE TABLE chaos.effects (job_id bigint PRIMARY KEY, worker text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());`);
    producers = new Producers(pool);
    workers = [await spawnWorker(url, workerEnv), await spawnWorker(url, workerEnv)];
  });
  after(async () => {
    await producers?.stop();
    await killWorkers().catch(() => undefined);
    if (pool) await endPool(pool, 2000);
    await cluster?.destroy();
  });

  it('1. planned switchover: every job completes, none fails, none starts more often than its attempts', async () => {
    producers.start();
    await waitFor('jobs completing before the switchover', async () => (await completed()) >= 300, 60_000, 200);
    const from = marks();
    const started = Date.now();
    const leader = await cluster.switchover();
    await waitFor('jobs completing on the new leader', async () => {
      const r = await queryOnce<{ n: number }>(leader.url(), "SELECT count(*)::int AS n FROM sluice.jobs WHERE status = 'completed' AND finished_at > to_timestamp($1 / 1000.0)", [started]);
      return r[0]!.n >= 100;
    }, 90_000, 200);
    const a = await drain();
    expect(a.overStarted, 'jobs started more often than their attempts').to.equal(0);
    primaryLines(from).forEach((lines, i) => {
      const w = workers[i]!;
      const context = `worker ${w.id} (exit code ${w.child.exitCode}):\n${lines.join('\n')}\n--- its last lines:\n${w.lines.slice(-15).join('\n')}`;
      expect(lines.length, `a few lines per worker, not one per attempt: ${context}`).to.be.within(1, 3);
    });
    report('Patroni switchover under load', { ...since(a), completed: a.completed, missing: a.missing, failed: a.failed, workersFoundPrimaryAfterSeconds: foundAfterSeconds(from), producerRetries: producers.retries, newLeader: leader.name });
  });

  it('2. leader SIGKILLed: the workers follow the promoted replica; every job is completed or rerun, none lost', async () => {
    producers.start();
    const base = await completed();
    await waitFor('jobs completing before the kill', async () => (await completed()) >= base + 300, 60_000, 200);
    // stop producing, add a batch of longer jobs that will be running when the leader dies, and
    // let the replica catch up, so that every acknowledged job exists on both nodes: what the
    // kill may take back is completions, not enqueues
    await producers.stop();
    await producers.batch(600, 300);
    const oldLeader = (await cluster.leader())!;
    const [replica] = await cluster.replicas();
    const lsn = (await queryOnce<{ lsn: string }>(oldLeader.url(), 'SELECT pg_current_wal_lsn()::text AS lsn'))[0]!.lsn;
    await waitFor('the replica to replay every enqueue', async () =>
      (await queryOnce<{ ok: boolean }>(replica!.url(), 'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok', [lsn]))[0]!.ok, 30_000, 100);
    const running = await queryOnce<{ n: number }>(oldLeader.url(), "SELECT count(*)::int AS n FROM sluice.jobs WHERE status IN ('queued', 'running')");
    expect(running[0]!.n, 'jobs still to run when the leader dies').to.be.greaterThan(0);

    const from = marks();
    // once killLeader returns its postgres is dead: every later completion is the new primary's
    const killed = await cluster.killLeader();
    const killedAt = Date.now();
    const promoted: PatroniNode = await cluster.waitForLeader(killed, 90_000);
    const promotedAfterS = (Date.now() - killedAt) / 1000;
    await waitFor('a job completed on the promoted replica', async () =>
      (await queryOnce<{ n: number }>(promoted.url(), 'SELECT count(*)::int AS n FROM sluice.jobs WHERE finished_at > to_timestamp($1 / 1000.0)', [killedAt]))[0]!.n > 0, 90_000, 100);
    const firstCompletion = await queryOnce<{ s: number }>(promoted.url(),
      'SELECT extract(epoch FROM min(finished_at))::float8 * 1000 - $1 AS s FROM sluice.jobs WHERE finished_at > to_timestamp($1 / 1000.0)', [killedAt]);
    producers.start();
    const resumed = await completed();
    await waitFor('new jobs completing after the failover', async () => (await completed()) >= resumed + 300, 90_000, 250);
    const a = await drain();
    primaryLines(from).forEach((lines, i) => {
      const w = workers[i]!;
      const context = `worker ${w.id} (exit code ${w.child.exitCode}):\n${lines.join('\n')}\n--- its last lines:\n${w.lines.slice(-15).join('\n')}`;
      expect(lines.length, `a few lines per worker, not one per attempt: ${context}`).to.be.within(1, 3);
    });
    report('Patroni leader SIGKILL under load', {
      ...since(a),
      completed: a.completed,
      missing: a.missing,
      failed: a.failed,
      workersFoundPrimaryAfterSeconds: foundAfterSeconds(from),
      promotedAfterSeconds: Number(promotedAfterS.toFixed(1)),
      firstJobCompletedAfterSeconds: Number((firstCompletion[0]!.s / 1000).toFixed(1)),
      producerRetries: producers.retries,
      killed: killed.name,
      promoted: promoted.name,
    });
  });

  it('3. the killed leader comes back as a replica: no sluice connection goes to it', async () => {
    const replicaBefore = cluster.nodes.find((n) => !n.running)!;
    const restarted = Date.now();
    await cluster.restartNode(replicaBefore);
    const rejoinS = (Date.now() - restarted) / 1000;
    const leader = await cluster.waitForLeader(replicaBefore);
    // the workers' URLs name the rejoined node first: every new connection tries it and moves on
    producers.start();
    const before = await completed();
    await waitFor('jobs completing with the old leader back', async () => (await completed()) >= before + 300, 90_000, 200);
    const sessions = await queryOnce<{ n: number }>(replicaBefore.url(), "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'sluice%' OR application_name = 'producers'");
    expect(sessions[0]!.n, 'sluice connections on the rejoined replica').to.equal(0);
    expect((await queryOnce<{ r: boolean }>(replicaBefore.url(), 'SELECT pg_is_in_recovery() AS r'))[0]!.r).to.equal(true);
    const a = await drain();
    report('Patroni old leader back as a replica', { ...since(a), completed: a.completed, missing: a.missing, failed: a.failed, rejoinSeconds: Number(rejoinS.toFixed(1)), leader: leader.name });
  });
});
