// Queue limits, pause and recurring jobs across three worker processes, the way replicas run:
// every limit holds on the database's own record of running jobs (sampled every 10 ms) and on
// the handlers' recorded runs, while a worker is SIGKILLed and its jobs are rescued.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import pg from 'pg';
import { pauseQueue, resumeQueue, setQueueLimits } from '../../src/admin/queues.js';
import { addJobs } from '../../src/enqueue.js';
import { killWorkers, spawnWorker, type WorkerProcess } from '../support/chaos.js';
import { createTestDatabase, waitFor } from '../support/db.js';
import { faultsEnabled } from '../support/faults.js';
import { migrated } from '../support/worker.js';

const SCRIPT = 'test/support/queue-worker-process.ts';
const workerEnv = {
  SLUICE_QUEUES: 'limited,keyed,rated,paused',
  SLUICE_CONCURRENCY: '5',
  SLUICE_POOL_SIZE: '3',
  SLUICE_RESCUE_AFTER_MS: '3000',
  SLUICE_HEARTBEAT_MS: '300',
  // changes must arrive by notification: the safety poll is a minute away
  SLUICE_POLL_MS: '60000',
};

/** The most runs of `queue` that overlapped (per concurrency key when `perKey`), from the recorded runs. */
async function peakOverlap(db: pg.Pool, queue: string, perKey = false): Promise<number> {
  const r = await db.query(
    `WITH ev AS (
       SELECT CASE WHEN $2 THEN concurrency_key ELSE '' END AS k, started_at AS t, 1 AS d FROM qc.runs WHERE queue = $1
       UNION ALL
       SELECT CASE WHEN $2 THEN concurrency_key ELSE '' END, coalesce(ended_at, killed_at), -1 FROM qc.runs WHERE queue = $1
     )
     SELECT coalesce(max(n), 0)::int AS peak FROM (SELECT sum(d) OVER (PARTITION BY k ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS n FROM ev) s`,
    [queue, perKey],
  );
  return r.rows[0].peak;
}

/** Samples the database's count of running jobs of `queue` every 10 ms; stop() returns the peak. */
function sampleRunning(db: pg.Pool, queue: string): { stop(): Promise<{ peak: number; samples: number }> } {
  let peak = 0;
  let samples = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const r = await db.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE queue = $1 AND status = 'running'", [queue]);
      peak = Math.max(peak, r.rows[0].n);
      samples++;
      await new Promise((res) => setTimeout(res, 10));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { peak, samples };
    },
  };
}

const done = async (db: pg.Pool, queue: string) =>
  (await db.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE queue = $1 AND status = 'completed'", [queue])).rows[0].n as number;

describe('queue control across three worker processes', function () {
  this.timeout(240_000);
  let url: string;
  let admin: pg.Pool;
  let workers: WorkerProcess[] = [];

  before(async function () {
    if (!faultsEnabled()) this.skip();
    url = await createTestDatabase();
    admin = await migrated(url, 4);
    await admin.query(`CREATE SCHEMA qc;
      CREATE TABLE qc.runs (id bigserial PRIMARY KEY, job_id bigint NOT NULL, worker text NOT NULL, queue text NOT NULL,
                            concurrency_key text, started_at timestamptz NOT NULL DEFAULT clock_timestamp(), ended_at timestamptz,
                            killed_at timestamptz)`);
    await setQueueLimits(admin, 'sluice', 'limited', { concurrency: 2 });
    await setQueueLimits(admin, 'sluice', 'keyed', { keyConcurrency: 1 });
    await setQueueLimits(admin, 'sluice', 'rated', { rateLimit: 20, ratePeriodMs: 1000 });
    workers = await Promise.all([0, 1, 2].map(() => spawnWorker(url, workerEnv, SCRIPT)));
  });
  after(async () => {
    await killWorkers();
    await admin?.end();
  });

  it('key_concurrency 1 holds per key while different keys run in parallel', async () => {
    await addJobs(admin, Array.from({ length: 60 }, (_, i) => ({ task: 'hold', queue: 'keyed', payload: { ms: 50 }, concurrencyKey: `customer-${i % 6}` })));
    await waitFor('60 keyed jobs done', async () => (await done(admin, 'keyed')) === 60, 120_000, 100);
    expect(await peakOverlap(admin, 'keyed', true), 'runs of one key at once').to.equal(1);
    expect(await peakOverlap(admin, 'keyed'), 'runs of different keys at once').to.be.above(1);
    const workersUsed = await admin.query("SELECT count(DISTINCT worker)::int AS n FROM qc.runs WHERE queue = 'keyed'");
    expect(workersUsed.rows[0].n).to.be.above(1);
  });

  it('a rate limit of 20 per second: no 1-second window with more than 20 starts over 200 jobs', async () => {
    await addJobs(admin, Array.from({ length: 200 }, () => ({ task: 'hold', queue: 'rated' })));
    await waitFor('200 rated jobs done', async () => (await done(admin, 'rated')) === 200, 120_000, 100);
    // starts as the claims recorded them (started_at), every window that begins at a start
    const r = await admin.query(`
      SELECT max((SELECT count(*) FROM sluice.jobs b WHERE b.queue = 'rated' AND b.started_at >= a.started_at
                    AND b.started_at < a.started_at + interval '1 second'))::int AS busiest,
             extract(epoch FROM max(started_at) - min(started_at))::float8 AS span
      FROM sluice.jobs a WHERE a.queue = 'rated'`);
    expect(r.rows[0].busiest).to.be.at.most(20);
    expect(r.rows[0].busiest, 'the limit was reached, not avoided').to.equal(20);
    // 200 starts at 20 per second take at least 9 seconds from the first to the last
    expect(r.rows[0].span).to.be.at.least(9);
  });

  it('pause stops new starts on every worker within a second; resume starts them again', async () => {
    await addJobs(admin, Array.from({ length: 400 }, () => ({ task: 'hold', queue: 'paused', payload: { ms: 100 } })));
    await waitFor('some paused-queue jobs done', async () => (await done(admin, 'paused')) >= 20, 60_000, 50);
    await pauseQueue(admin, 'sluice', 'paused');
    const pausedAt = (await admin.query('SELECT clock_timestamp() AS t')).rows[0].t as Date;
    await waitFor('running jobs of the paused queue to finish', async () => {
      const r = await admin.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE queue = 'paused' AND status = 'running'");
      return r.rows[0].n === 0;
    }, 30_000, 50);
    await new Promise((r) => setTimeout(r, 1500));
    const late = await admin.query("SELECT count(*)::int AS n FROM qc.runs WHERE queue = 'paused' AND started_at > $1::timestamptz + interval '1 second'", [pausedAt]);
    expect(late.rows[0].n, 'runs started more than a second after the pause').to.equal(0);
    const left = 400 - (await done(admin, 'paused'));
    expect(left).to.be.above(0);

    await resumeQueue(admin, 'sluice', 'paused');
    // half the one-minute poll: a start within it came by notification
    await waitFor('a job to start after resume', async () => {
      const r = await admin.query("SELECT count(*)::int AS n FROM qc.runs WHERE queue = 'paused' AND started_at > $1::timestamptz + interval '1 second'", [pausedAt]);
      return r.rows[0].n > 0;
    }, 30_000, 20);
    await waitFor('the rest of the queue done', async () => (await done(admin, 'paused')) === 400, 120_000, 100);
    const servedBy = await admin.query("SELECT count(DISTINCT worker)::int AS n FROM qc.runs WHERE queue = 'paused' AND started_at > $1", [pausedAt]);
    expect(servedBy.rows[0].n, 'every worker resumed').to.equal(3);
  });

  it('concurrency 2 across three workers is never exceeded, while one is SIGKILLed and its jobs rescued', async () => {
    await addJobs(admin, Array.from({ length: 60 }, () => ({ task: 'hold', queue: 'limited', payload: { ms: 300 }, maxAttempts: 5 })));
    const sampler = sampleRunning(admin, 'limited');
    await waitFor('the first limited jobs to run', async () => (await done(admin, 'limited')) >= 6, 60_000, 50);
    // kill a worker that holds a job of the queue
    const holder = (await waitFor('a worker holding a limited job', async () => {
      const r = await admin.query("SELECT locked_by FROM sluice.jobs WHERE queue = 'limited' AND status = 'running' LIMIT 1");
      return workers.find((w) => w.id === r.rows[0]?.locked_by);
    }, 30_000, 10))!;
    holder.child.kill('SIGKILL');
    await holder.exited;
    await admin.query("UPDATE qc.runs SET killed_at = clock_timestamp() WHERE worker = $1 AND ended_at IS NULL", [holder.id]);
    await waitFor('60 limited jobs done', async () => (await done(admin, 'limited')) === 60, 180_000, 100);
    const { peak, samples } = await sampler.stop();
    expect(samples).to.be.above(100);
    expect(peak, 'running jobs of the queue, sampled').to.equal(2);
    expect(await peakOverlap(admin, 'limited'), 'runs at once, recorded by the handlers').to.be.at.most(2);
    const rescued = await admin.query("SELECT count(*)::int AS n FROM sluice.jobs WHERE queue = 'limited' AND errors::text LIKE '%worker lost%'");
    expect(rescued.rows[0].n, 'the killed worker held a job that was rescued').to.be.at.least(1);
  });
});

describe('recurring jobs across three worker processes', function () {
  this.timeout(240_000);
  let url: string;
  let admin: pg.Pool;
  let dir: string;

  before(async function () {
    if (!faultsEnabled()) this.skip();
    url = await createTestDatabase();
    admin = await migrated(url, 2);
    await admin.query('CREATE SCHEMA qc; CREATE TABLE qc.runs (id bigserial PRIMARY KEY, job_id bigint, worker text, queue text, concurrency_key text, started_at timestamptz, ended_at timestamptz, killed_at timestamptz)');
    dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-cron-'));
  });
  after(async () => {
    await killWorkers();
    await admin?.end();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const configFile = (backfill: number) => {
    const file = path.join(dir, `cron-${backfill}.yaml`);
    writeFileSync(file, `cron:\n  - name: every-second\n    schedule: "* * * * * *"\n    task: tick\n    backfill: ${backfill}\n`);
    return file;
  };
  const ticks = async () =>
    (await admin.query("SELECT c.tick, j.job_key FROM sluice.cron_ticks c JOIN sluice.jobs j ON j.id = c.job_id WHERE c.name = 'every-second' ORDER BY c.tick")).rows as {
      tick: Date;
      job_key: string;
    }[];

  it('a per-second schedule on three workers for 30 s: one job per tick, none missing, none doubled; backfill after a restart', async () => {
    const env = { ...workerEnv, SLUICE_QUEUES: 'default', SLUICE_CONFIG: configFile(0) };
    const three = await Promise.all([0, 1, 2].map(() => spawnWorker(url, env, SCRIPT)));
    const first = await waitFor('the first tick', async () => (await ticks())[0], 30_000, 100);
    await waitFor('30 s of ticks', async () => {
      const t = await ticks();
      return t.length > 0 && t.at(-1)!.tick.getTime() - first.tick.getTime() >= 30_000;
    }, 90_000, 250);
    for (const w of three) w.child.kill('SIGTERM');
    await Promise.all(three.map((w) => w.exited));
    const all = await ticks();
    const jobs = await admin.query("SELECT count(*)::int AS n, count(DISTINCT job_key)::int AS keys FROM sluice.jobs WHERE task = 'tick'");
    expect(jobs.rows[0], 'one job per tick').to.deep.equal({ n: all.length, keys: all.length });
    for (let i = 1; i < all.length; i++) expect(all[i]!.tick.getTime() - all[i - 1]!.tick.getTime(), `after ${all[i - 1]!.tick.toISOString()}`).to.equal(1000);
    expect(all.length).to.be.at.least(31);
    expect(all[0]!.job_key).to.equal(`cron:every-second:${all[0]!.tick.toISOString()}`);

    // down for at least 4 ticks, then one worker that may backfill 2 of them
    const lastBefore = all.at(-1)!.tick.getTime();
    await waitFor('4 ticks to pass', async () => {
      const now = (await admin.query('SELECT clock_timestamp() AS t')).rows[0].t as Date;
      return now.getTime() - lastBefore >= 4500;
    }, 30_000, 100);
    const back = await spawnWorker(url, { ...env, SLUICE_CONFIG: configFile(2) }, SCRIPT);
    const after = (await waitFor('ticks after the restart', async () => {
      const t = (await ticks()).filter((x) => x.tick.getTime() > lastBefore);
      return t.length >= 5 ? t : undefined;
    }, 30_000, 100))!;
    const backfillLine = back.lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).find((l) => /backfill/.test(l.msg ?? ''));
    expect(backfillLine, 'the backfill was logged').to.exist;
    expect(backfillLine.ticks).to.deep.equal(after.slice(0, 2).map((t) => t.tick.toISOString()));
    // the two latest missed ticks, then every tick again; the older missed ones stay missed
    expect(after[0]!.tick.getTime() - lastBefore).to.be.at.least(3000);
    for (let i = 1; i < after.length; i++) expect(after[i]!.tick.getTime() - after[i - 1]!.tick.getTime()).to.equal(1000);
  });
});
