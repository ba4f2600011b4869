// npm run bench: starts a throwaway PostgreSQL and measures sluice against graphile-worker and
// pg-boss on it, in the same run, interleaved, several rounds each; prints a table of medians and
// writes it all to bench/results/latest.json. See docs/benchmarks.md.
//
//   npm run bench                       default run (~6 min on 2 cores)
//   npm run bench -- --quick            smoke run (fewer jobs, one round)
//   npm run bench -- --durable          the same on a server with fsync, synchronous_commit on
//   npm run bench -- --only graphile,pgboss
//   npm run bench -- --finished-rows 1000000
//   npm run bench -- --long             1,000,000 jobs through one sluice worker
//   npm run bench -- --notify           sluice's notifications: enqueue throughput, pickup (fsync on)
//   npm run bench -- --pressure         steady load while xmin is held back (fsync on)
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { LocalCluster } from '../src/embedded/cluster.js';
import { ConnectionSampler, fmt, markdownTable, max, median, percentile, sleep, type ConnectionPeak } from './measure.js';
import { noNotifyRuns, notifySummary, renderNotify, runNotify, type NotifyOptions, type NotifyRuns } from './notify.js';
import { benchDir, killChildren, log, profileChildrenInto, repoRoot, rotate, runChild, type ScenarioEnv } from './orchestrator.js';
import {
  PRESSURE_KINDS,
  phaseRows,
  pressureTargets,
  renderPressure,
  runPressure,
  type PressureKind,
  type PressureOptions,
  type PressureRun,
} from './pressure.js';
import type { ChildResult, EnqueueResult, LatencyResult, LongResult, WorkoffResult } from './protocol.js';
import { SYSTEMS, loadAdapter, loadVariants } from './systems/index.js';
import { MONITOR_APP, PRODUCER_APP, type SystemAdapter, type SystemName, type VariantId, type VariantInfo } from './systems/types.js';

type ServerSettings = Record<string, string | number>;

/** The default server: no WAL flushes, so the figures are the job systems' own overhead. */
const FAST_SETTINGS: ServerSettings = { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: 200 };
/** --durable: every commit waits for its WAL flush, as in production; nothing else differs. */
const DURABLE_SETTINGS: ServerSettings = { fsync: 'on', synchronous_commit: 'on', full_page_writes: 'on', max_connections: 200 };

/**
 * --notify and --pressure are about production behaviour (NOTIFY serialises commits, and that
 * costs only with real WAL flushes), so they always get the durable server; the pressure
 * scenario's idle-in-transaction session must not be cut off (0 is also PostgreSQL's default).
 */
function serverSettings(opts: Options): ServerSettings {
  if (opts.pressure) return { ...DURABLE_SETTINGS, idle_in_transaction_session_timeout: 0 };
  if (opts.notify) return DURABLE_SETTINGS;
  return opts.durable ? DURABLE_SETTINGS : FAST_SETTINGS;
}

/** The default run: rounds of enqueue, work-off and latency (and --finished-rows). */
const roundsMode = (opts: Options) => !opts.long && !opts.notify && !opts.pressure;

const describeSettings = (settings: ServerSettings) =>
  Object.entries(settings)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');

/** pg-boss keeps its jobs in a table partitioned by queue, which pg_stat_user_tables does not sum up. */
const PRESSURE_SYSTEMS: SystemName[] = ['sluice', 'graphile'];
/** --notify measures sluice; its pickup run also runs graphile-worker's variants in the same load, for the floor. */
const NOTIFY_SYSTEMS: SystemName[] = ['sluice', 'graphile'];

type Scenario = 'enqueue' | 'workoff' | 'latency';
const SCENARIOS: Scenario[] = ['enqueue', 'workoff', 'latency'];

interface Options {
  quick: boolean;
  durable: boolean;
  warmup: boolean;
  long: boolean;
  rounds: number;
  jobs: number;
  chunk: number;
  concurrency: number[];
  only: SystemName[];
  /** --variants: the variant ids to keep (undefined: every variant of the systems in `only`). */
  variants?: string[];
  scenarios: Scenario[];
  finishedRows: number;
  latencyRate: number;
  latencySeconds: number;
  latencyConcurrency: number;
  longJobs: number;
  longConcurrency: number;
  checkpointEvery: number;
  /** --notify: its settings; undefined when not asked for. */
  notify?: NotifyOptions;
  /** --pressure: its settings; undefined when not asked for. */
  pressure?: PressureOptions;
  stallMs: number;
  out: string;
  /** --cpu-prof: where each child (worker or producer) writes its V8 CPU profile. */
  cpuProfDir?: string;
}

const HELP = `npm run bench -- [options]

Starts a throwaway PostgreSQL and measures sluice, graphile-worker and pg-boss on it.

  --quick                 smoke run: 5,000 jobs, 1 round, 2 s of latency probes (~1-2 min)
  --durable               server with fsync=on, synchronous_commit=on, full_page_writes=on
                          (default: all three off); everything else the same
  --rounds N              interleaved rounds per measurement (default 3)
  --no-warmup             skip the unrecorded 2,000-job work-off per worker before round 1
  --jobs N                jobs per enqueue and work-off run (default 20000)
  --concurrency A,B       work-off concurrencies (default 10,50)
  --only LIST             systems to run: sluice,graphile,pgboss (default all)
  --variants LIST         only these configurations of them, e.g. sluice-delete,graphile-batched
                          (default all; ids in the JSON's "variants")
  --scenarios LIST        enqueue,workoff,latency (default all)
  --latency-rate N        jobs/s enqueued one at a time in the latency probe (default 50)
  --latency-seconds N     length of each latency probe (default 4)
  --finished-rows N       also compare sluice's work-off with N completed rows in sluice.jobs
                          against an empty table (default off; try 1000000, up to 10000000)
  --long                  only the long run: --long-jobs through one sluice worker,
                          throughput and memory every --checkpoint-every jobs
  --long-jobs N           default 1000000
  --checkpoint-every N    default 100000

These two run only their own scenario, always on a server with fsync=on, synchronous_commit=on
and full_page_writes=on; they can be combined with each other, not with --long:
  --notify                sluice, --rounds rounds of: SELECT sluice.add_job('noop') throughput
                          with sluice's triggers enabled and disabled; pickup by an idle worker
                          while producers add single jobs (also graphile-worker's variants, in
                          the same load, unless --only or --variants leave them out); pickup
                          after a commit 2 s after the insert (~14 min; --quick ~2 min)
  --notify-seconds N      length of each throughput and pickup run (default 15; --quick 5)
  --notify-clients A,B    connections of the throughput runs (default 1,8,32); the pickup run
                          uses the largest number as its producers
  --notify-rate N         combined jobs/s of the pickup run's producers (default 500)
  --pressure              sluice and graphile-worker (default and batched): a steady load of
                          single jobs through baseline, pressure and recovery phases, with the
                          jobs table's dead tuples and size sampled (~4 min per system and variant)
  --pressure-variant V    held-xmin (a session idle in transaction), readers (REPEATABLE READ
                          sessions scanning the jobs table) or both (default both)
  --pressure-rate N       offered jobs/s (default 1000)
  --pressure-phases A,B,C seconds of baseline, pressure, recovery (default 60,120,60;
                          --quick 10,20,10)
  --pressure-producers N  producer connections, each adding one job per transaction (default 4)
  --pressure-concurrency N  worker concurrency (default 10)

  --out FILE              results file (default bench/results/latest.json)
  --cpu-prof DIR          each child (worker or producer) writes a V8 CPU profile into DIR
                          (node --cpu-prof); profiling slows the children, so its figures are
                          not comparable with a run without it
  -h, --help
`;

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      durable: { type: 'boolean', default: false },
      'no-warmup': { type: 'boolean', default: false },
      long: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      jobs: { type: 'string' },
      concurrency: { type: 'string' },
      only: { type: 'string' },
      variants: { type: 'string' },
      scenarios: { type: 'string' },
      'finished-rows': { type: 'string' },
      'latency-rate': { type: 'string' },
      'latency-seconds': { type: 'string' },
      'long-jobs': { type: 'string' },
      'checkpoint-every': { type: 'string' },
      notify: { type: 'boolean', default: false },
      'notify-seconds': { type: 'string' },
      'notify-clients': { type: 'string' },
      'notify-rate': { type: 'string' },
      pressure: { type: 'boolean', default: false },
      'pressure-variant': { type: 'string' },
      'pressure-rate': { type: 'string' },
      'pressure-phases': { type: 'string' },
      'pressure-producers': { type: 'string' },
      'pressure-concurrency': { type: 'string' },
      out: { type: 'string' },
      'cpu-prof': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const int = (name: string, v: string | undefined, dflt: number, min = 1): number => {
    if (v === undefined) return dflt;
    const n = Number(v.replaceAll('_', '').replaceAll(',', ''));
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  const quick = values.quick ?? false;
  const jobs = int('jobs', values.jobs, quick ? 5_000 : 20_000);
  const aliases: Record<string, SystemName> = {
    sluice: 'sluice',
    graphile: 'graphile',
    'graphile-worker': 'graphile',
    pgboss: 'pgboss',
    'pg-boss': 'pgboss',
  };
  const only = values.only
    ? values.only.split(',').map((s) => {
        const name = aliases[s.trim().toLowerCase()];
        if (!name) throw new Error(`--only: unknown system ${JSON.stringify(s)} (sluice, graphile, pgboss)`);
        return name;
      })
    : [...SYSTEMS];
  const scenarios = values.scenarios
    ? values.scenarios.split(',').map((s) => {
        const t = s.trim() as Scenario;
        if (!SCENARIOS.includes(t)) throw new Error(`--scenarios: unknown ${JSON.stringify(s)} (${SCENARIOS.join(', ')})`);
        return t;
      })
    : [...SCENARIOS];
  const ints = (name: string, v: string) => v.split(',').map((s) => int(name, s.trim(), 0, 1));
  const concurrency = ints('concurrency', values.concurrency ?? '10,50');
  const long = values.long ?? false;
  if (long && !only.includes('sluice')) throw new Error('--long runs sluice: do not leave it out with --only');
  const rounds = int('rounds', values.rounds, quick ? 1 : 3);
  const latencyConcurrency = 10;
  let notify: NotifyOptions | undefined;
  if (values.notify) {
    if (!only.includes('sluice')) throw new Error('--notify measures sluice: do not leave it out with --only');
    notify = {
      rounds,
      seconds: int('notify-seconds', values['notify-seconds'], quick ? 5 : 15),
      clients: ints('notify-clients', values['notify-clients'] ?? '1,8,32'),
      rate: int('notify-rate', values['notify-rate'], 500),
      concurrency: latencyConcurrency,
      delayedCommits: quick ? 3 : 10,
      holdMs: 2000,
    };
  }
  let pressure: PressureOptions | undefined;
  if (values.pressure) {
    if (!only.some((s) => PRESSURE_SYSTEMS.includes(s))) throw new Error('--pressure measures sluice and graphile-worker: keep one of them in --only');
    const variant = values['pressure-variant'] ?? 'both';
    if (variant !== 'both' && !PRESSURE_KINDS.includes(variant as PressureKind)) {
      throw new Error(`--pressure-variant: unknown ${JSON.stringify(variant)} (${PRESSURE_KINDS.join(', ')}, both)`);
    }
    const phases = ints('pressure-phases', values['pressure-phases'] ?? (quick ? '10,20,10' : '60,120,60'));
    if (phases.length !== 3) throw new Error('--pressure-phases takes three lengths in seconds: baseline,pressure,recovery');
    pressure = {
      kinds: variant === 'both' ? [...PRESSURE_KINDS] : [variant as PressureKind],
      rate: int('pressure-rate', values['pressure-rate'], 1000),
      producers: int('pressure-producers', values['pressure-producers'], 4),
      concurrency: int('pressure-concurrency', values['pressure-concurrency'], 10),
      phases: phases as [number, number, number],
    };
  }
  if (long && (notify || pressure)) throw new Error('--long cannot be combined with --notify or --pressure');
  return {
    quick,
    durable: values.durable ?? false,
    warmup: !(values['no-warmup'] ?? false),
    long,
    rounds,
    jobs,
    chunk: Math.min(10_000, jobs),
    concurrency,
    only: SYSTEMS.filter((s) => only.includes(s)),
    variants: values.variants?.split(',').map((s) => s.trim()),
    scenarios: SCENARIOS.filter((s) => scenarios.includes(s)),
    finishedRows: int('finished-rows', values['finished-rows'], 0, 0),
    latencyRate: int('latency-rate', values['latency-rate'], 50),
    latencySeconds: int('latency-seconds', values['latency-seconds'], quick ? 2 : 4),
    latencyConcurrency,
    longJobs: int('long-jobs', values['long-jobs'], 1_000_000),
    longConcurrency: 50,
    checkpointEvery: int('checkpoint-every', values['checkpoint-every'], 100_000),
    notify,
    pressure,
    stallMs: 60_000,
    out: path.resolve(values.out ?? path.join(benchDir, 'results', 'latest.json')),
    ...(values['cpu-prof'] ? { cpuProfDir: path.resolve(values['cpu-prof']) } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// progress and cleanup

let cluster: LocalCluster | undefined;
let tempDir: string | undefined;
const clients: pg.Client[] = [];
let cleanedUp: Promise<void> | undefined;

function cleanup(): Promise<void> {
  cleanedUp ??= (async () => {
    killChildren();
    for (const c of clients) await c.end().catch(() => undefined);
    if (cluster) {
      await cluster.destroy().catch((err: Error) => log(`could not remove the server: ${err.message}`));
    }
    if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  })();
  return cleanedUp;
}

let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log(`${signal}: stopping and removing the server`);
    reportPartial(`interrupted by ${signal}`);
    void cleanup().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------------------------
// measurements

interface RunRecord {
  round: number;
  scenario: Scenario | 'finished-rows';
  system: SystemName;
  variant?: VariantId;
  concurrency?: number;
  /** finished-rows scenario: completed rows present in the table */
  finishedRows?: number;
  result: ChildResult;
  connections?: ConnectionPeak;
}

interface Env {
  opts: Options;
  adapters: Map<SystemName, SystemAdapter>;
  variants: VariantInfo[];
  /** one admin connection per system database, for resets and checks */
  admin: Map<SystemName, pg.Client>;
  /** on the postgres database: samples pg_stat_activity */
  monitor: pg.Client;
  url(system: SystemName): string;
  records: RunRecord[];
  finished?: { url: string; admin: pg.Client };
}

/** Empties the system's job tables and leaves every database in the same state: vacuumed, analysed, checkpointed. */
async function resetSystem(env: Env, system: SystemName): Promise<void> {
  const db = env.admin.get(system)!;
  await env.adapters.get(system)!.reset(db);
  await settle(db);
}

async function settle(db: pg.Client): Promise<void> {
  await db.query('VACUUM ANALYZE');
  await db.query('CHECKPOINT');
}

async function measureEnqueue(env: Env, round: number, system: SystemName): Promise<void> {
  const adapter = env.adapters.get(system)!;
  await resetSystem(env, system);
  const r = await runChild<EnqueueResult>({ mode: 'enqueue', system, url: env.url(system), jobs: env.opts.jobs, chunk: env.opts.chunk });
  const total = await adapter.total(env.admin.get(system)!);
  if (total !== env.opts.jobs + 1) throw new Error(`${system}: expected ${env.opts.jobs + 1} jobs after the enqueue, found ${total}`);
  env.records.push({ round, scenario: 'enqueue', system, result: r });
  log(`  enqueue   ${adapter.label.padEnd(24)} ${fmt(r.jobsPerSec).padStart(8)} jobs/s  (${fmt(r.jobs)} in ${fmt(r.ms)} ms)`);
}

async function workoffChild(
  env: Env,
  system: SystemName,
  variant: VariantId,
  url: string,
  database: string,
  concurrency: number,
  jobs = env.opts.jobs,
): Promise<{ r: WorkoffResult; conns: ConnectionPeak }> {
  // enqueued from this process, so the worker's process holds nothing but the worker
  const producer = await env.adapters.get(system)!.producer(url);
  try {
    await producer.addMany(jobs, Math.min(env.opts.chunk, jobs));
  } finally {
    await producer.close();
  }
  // statistics that know about the backlog: otherwise whether autovacuum happens to analyse the
  // table during the run changes the plans, and the rate, from one run to the next
  await (database === FINISHED_DB ? env.finished!.admin : env.admin.get(system)!).query('ANALYZE');
  const sampler = new ConnectionSampler(env.monitor, database);
  let conns: ConnectionPeak | undefined;
  try {
    const r = await runChild<WorkoffResult>(
      { mode: 'workoff', system, variant, url, jobs, concurrency, stallMs: env.opts.stallMs },
      { onReady: () => sampler.start() },
    );
    conns = await sampler.stop();
    return { r, conns };
  } finally {
    if (!conns) await sampler.stop();
  }
}

function describeWorkoff(r: WorkoffResult, conns: ConnectionPeak): string {
  const apps = Object.entries(conns.byApplication)
    .map(([a, n]) => `${a} ${n}`)
    .join(', ');
  return (
    `${fmt(r.jobsPerSec).padStart(8)} jobs/s  first job after ${fmt(r.startToFirstMs)} ms, ` +
    `peak ${conns.peak} conns (${apps || 'none seen'}), rss ${fmt(r.rssPeakMB)} MB, ` +
    `worker cpu ${fmt((r.workerCpuMs / r.jobs) * 1000)} ms/1k jobs`
  );
}

async function measureWorkoff(env: Env, round: number, v: VariantInfo, concurrency: number): Promise<void> {
  const system = v.system;
  const adapter = env.adapters.get(system)!;
  await resetSystem(env, system);
  const { r, conns } = await workoffChild(env, system, v.id, env.url(system), dbName(system), concurrency);
  const db = env.admin.get(system)!;
  const left = await adapter.remaining(db);
  if (left !== 0) throw new Error(`${v.label}: ${left} jobs unfinished after the work-off`);
  env.records.push({ round, scenario: 'workoff', system, variant: v.id, concurrency, result: r, connections: conns });
  log(`  work-off  ${`${v.label} c=${concurrency}`.padEnd(30)} ${describeWorkoff(r, conns)}`);
}

async function measureLatency(env: Env, round: number, v: VariantInfo): Promise<void> {
  const system = v.system;
  await resetSystem(env, system);
  const r = await runChild<LatencyResult>({
    mode: 'latency',
    system,
    variant: v.id,
    url: env.url(system),
    concurrency: env.opts.latencyConcurrency,
    rate: env.opts.latencyRate,
    seconds: env.opts.latencySeconds,
  });
  env.records.push({ round, scenario: 'latency', system, variant: v.id, concurrency: env.opts.latencyConcurrency, result: r });
  const missing = r.sent - r.handled;
  log(
    `  latency   ${v.label.padEnd(30)} p50 ${fmt(r.p50, 1)} ms, p95 ${fmt(r.p95, 1)} ms, p99 ${fmt(r.p99, 1)} ms, ` +
      `max ${fmt(r.max, 1)} ms  (${r.sent} jobs at ${fmt(r.rate, 1)}/s${missing ? `, ${missing} NOT PICKED UP within 15 s` : ''})`,
  );
}

async function measureFinished(env: Env, round: number, withRows: boolean, concurrency: number): Promise<void> {
  const sluice = await import('./systems/sluice.js');
  const f = env.finished!;
  let url: string;
  let database: string;
  let db: pg.Client;
  if (withRows) {
    ({ url, admin: db } = f);
    database = FINISHED_DB;
    await sluice.resetKeepingFinished(db);
    await settle(db);
  } else {
    url = env.url('sluice');
    database = dbName('sluice');
    db = env.admin.get('sluice')!;
    await resetSystem(env, 'sluice');
  }
  const { r, conns } = await workoffChild(env, 'sluice', 'sluice', url, database, concurrency);
  const rows = withRows ? env.opts.finishedRows : 0;
  if (withRows) {
    const still = await sluice.countFinished(db);
    if (still !== rows) log(`  note: ${rows - still} of the pre-filled finished rows were removed during the run (by sluice?)`);
  }
  env.records.push({ round, scenario: 'finished-rows', system: 'sluice', variant: 'sluice', concurrency, finishedRows: rows, result: r, connections: conns });
  log(`  finished  ${`sluice, ${fmt(rows)} finished rows`.padEnd(30)} ${describeWorkoff(r, conns)}`);
}

// ---------------------------------------------------------------------------------------------
// long mode

async function runLong(env: Env): Promise<LongResult> {
  const opts = env.opts;
  const url = env.url('sluice');
  await resetSystem(env, 'sluice');
  const pool = new pg.Pool({ connectionString: url, max: 1, application_name: PRODUCER_APP });
  pool.on('error', () => undefined);
  const producer = await env.adapters.get('sluice')!.producer(url);
  let enqueued = 0;
  let producing: Promise<void> | undefined;
  let stopProducing = false;
  const lowWater = 30_000;
  const chunk = 10_000;
  const produce = async () => {
    while (enqueued < opts.longJobs && !stopProducing) {
      const r = await pool.query<{ n: string }>("SELECT count(*) AS n FROM sluice.jobs WHERE status = 'queued'");
      let queued = Number(r.rows[0]!.n);
      while (queued < lowWater && enqueued < opts.longJobs) {
        const n = Math.min(chunk, opts.longJobs - enqueued);
        await producer.addMany(n, n);
        enqueued += n;
        queued += n;
      }
      await sleep(100);
    }
  };
  log(
    `long run: ${fmt(opts.longJobs)} jobs through one sluice worker (concurrency ${opts.longConcurrency}, ` +
      `poolSize 4), enqueued ${fmt(chunk)} at a time whenever fewer than ${fmt(lowWater)} are queued`,
  );
  // a backlog before the worker starts, so it does not begin idle
  await producer.addMany(Math.min(lowWater, opts.longJobs), chunk);
  enqueued = Math.min(lowWater, opts.longJobs);
  try {
    const r = await runChild<LongResult>(
      {
        mode: 'long',
        system: 'sluice',
        variant: 'sluice',
        url,
        jobs: opts.longJobs,
        concurrency: opts.longConcurrency,
        checkpointEvery: opts.checkpointEvery,
        stallMs: opts.stallMs,
      },
      {
        onReady: () => {
          producing = produce();
          producing.catch((err: Error) => log(`producer failed: ${err.message}`));
        },
        onCheckpoint: (cp) =>
          log(
            `  ${fmt(cp.handled).padStart(10)} jobs  ${fmt(cp.elapsedMs / 1000, 1).padStart(6)} s  ` +
              `${fmt(cp.intervalJobsPerSec).padStart(7)} jobs/s  rss ${fmt(cp.rssMB, 1)} MB  heap ${fmt(cp.heapUsedMB, 1)} MB`,
          ),
      },
    );
    return r;
  } finally {
    stopProducing = true;
    await producing?.catch(() => undefined);
    await producer.close();
    await pool.end();
  }
}

// ---------------------------------------------------------------------------------------------
// summary

interface SummaryRow {
  metric: string;
  unit: string;
  better: 'higher' | 'lower';
  /** how the per-round values are combined */
  combine: 'median' | 'max';
  values: Partial<Record<VariantId, number | null>>;
  /** sluice's value divided by the peer's */
  ratios: Partial<Record<VariantId, number | null>>;
}

function summarize(env: Env): SummaryRow[] {
  const rows: SummaryRow[] = [];
  const recs = env.records;
  const row = (
    metric: string,
    unit: string,
    better: 'higher' | 'lower',
    combine: 'median' | 'max',
    pick: (v: VariantInfo) => number[],
  ) => {
    const values: SummaryRow['values'] = {};
    for (const v of env.variants) {
      const xs = pick(v);
      values[v.id] = combine === 'median' ? median(xs) : max(xs);
    }
    const ratios: SummaryRow['ratios'] = {};
    const baseVariant = ratioBase(env);
    const base = baseVariant && values[baseVariant.id];
    for (const v of env.variants) {
      if (v === baseVariant) continue;
      const peer = values[v.id];
      ratios[v.id] = base !== undefined && base !== null && peer !== undefined && peer !== null && peer !== 0 ? base / peer : null;
    }
    if (Object.values(values).some((x) => x !== null)) rows.push({ metric, unit, better, combine, values, ratios });
  };
  const sel = <T extends ChildResult>(f: (r: RunRecord) => boolean) => recs.filter(f) as (RunRecord & { result: T })[];

  // enqueueing does not depend on the worker's settings: one figure per system, in its first column
  const firstOf = (v: VariantInfo) => env.variants.find((x) => x.system === v.system) === v;
  row('bulk enqueue', 'jobs/s', 'higher', 'median', (v) =>
    firstOf(v)
      ? sel<EnqueueResult>((r) => r.scenario === 'enqueue' && r.system === v.system).map((r) => r.result.jobsPerSec)
      : [],
  );
  const wo = (v: VariantInfo, c: number) =>
    sel<WorkoffResult>((r) => r.scenario === 'workoff' && r.variant === v.id && r.concurrency === c);
  for (const c of env.opts.concurrency) {
    row(`work-off c=${c}`, 'jobs/s', 'higher', 'median', (v) => wo(v, c).map((r) => r.result.jobsPerSec));
  }
  for (const c of env.opts.concurrency) {
    row(`start to first job c=${c}`, 'ms', 'lower', 'median', (v) => wo(v, c).map((r) => r.result.startToFirstMs));
  }
  const lat = (v: VariantInfo) => sel<LatencyResult>((r) => r.scenario === 'latency' && r.variant === v.id);
  row('pickup latency p50', 'ms', 'lower', 'median', (v) => lat(v).map((r) => r.result.p50 ?? NaN));
  row('pickup latency p95', 'ms', 'lower', 'median', (v) => lat(v).map((r) => r.result.p95 ?? NaN));
  row('pickup latency p99', 'ms', 'lower', 'median', (v) => lat(v).map((r) => r.result.p99 ?? NaN));
  for (const c of env.opts.concurrency) {
    row(`peak connections c=${c}`, 'conns', 'lower', 'max', (v) => wo(v, c).map((r) => r.connections?.peak ?? NaN));
  }
  row('worker RSS before start', 'MB', 'lower', 'median', (v) =>
    sel<WorkoffResult>((r) => r.scenario === 'workoff' && r.variant === v.id).map((r) => r.result.rssBaselineMB),
  );
  for (const c of env.opts.concurrency) {
    row(`worker peak RSS c=${c}`, 'MB', 'lower', 'median', (v) => wo(v, c).map((r) => r.result.rssPeakMB));
  }
  for (const c of env.opts.concurrency) {
    row(`worker CPU c=${c}`, 'ms/1k jobs', 'lower', 'median', (v) =>
      wo(v, c).map((r) => (r.result.workerCpuMs / r.result.jobs) * 1000),
    );
  }
  for (const c of env.opts.concurrency) {
    row(`machine CPU c=${c}`, 'ms/1k jobs', 'lower', 'median', (v) =>
      wo(v, c).map((r) => (r.result.machineCpuMs === null ? NaN : (r.result.machineCpuMs / r.result.jobs) * 1000)),
    );
  }
  return rows;
}

/** The variant every ratio divides: sluice's default one, or the first sluice variant kept by --variants. */
function ratioBase(env: Env): VariantInfo | undefined {
  return env.variants.find((v) => v.system === 'sluice');
}

function renderSummary(env: Env, rows: SummaryRow[]): string {
  const base = ratioBase(env);
  const peers = env.variants.filter((v) => v !== base);
  const header = [
    'metric',
    ...env.variants.map((v) => v.label),
    ...(base ? peers.map((v) => `${base.label} ÷ ${v.label}`) : []),
  ];
  const body = rows.map((r) => {
    const digits = r.unit === 'ms' ? 1 : 0;
    const arrow = r.better === 'higher' ? '↑' : '↓';
    return [
      `${r.metric}, ${r.unit} ${arrow}`,
      ...env.variants.map((v) => fmt(r.values[v.id], digits)),
      ...(base ? peers.map((v) => (r.ratios[v.id] == null ? '–' : `${fmt(r.ratios[v.id], 2)}×`)) : []),
    ];
  });
  return markdownTable(header, body);
}

/**
 * The finished-rows comparison: medians of each side, and the median of the rounds' own ratios
 * (the two runs of a round are back to back, so their ratio shares the machine's mood; on a
 * noisy machine it is the steadier figure).
 */
function finishedSummary(env: Env) {
  const recs = env.records.filter((r) => r.scenario === 'finished-rows') as (RunRecord & { result: WorkoffResult })[];
  if (!recs.length) return undefined;
  const rate = (round: number, withRows: boolean) =>
    recs.find((r) => r.round === round && Boolean(r.finishedRows) === withRows)?.result.jobsPerSec;
  const rounds = [...new Set(recs.map((r) => r.round))];
  const pairedRatios = rounds
    .map((round) => [rate(round, false), rate(round, true)])
    .filter((p): p is [number, number] => p[0] !== undefined && p[1] !== undefined && p[0] > 0)
    .map(([empty, full]) => full / empty);
  return {
    rows: env.opts.finishedRows,
    concurrency: recs[0]!.concurrency!,
    emptyJobsPerSec: median(recs.filter((r) => !r.finishedRows).map((r) => r.result.jobsPerSec)),
    withRowsJobsPerSec: median(recs.filter((r) => r.finishedRows).map((r) => r.result.jobsPerSec)),
    pairedRatios,
    medianPairedRatio: pairedRatios.length ? median(pairedRatios) : undefined,
  };
}

function renderFinished(env: Env): string | undefined {
  const f = finishedSummary(env);
  if (!f) return undefined;
  const { emptyJobsPerSec: empty, withRowsJobsPerSec: full } = f;
  return markdownTable(
    ['sluice work-off, c=' + f.concurrency, 'jobs/s ↑', 'vs empty (medians)', 'vs empty (median of the rounds\' ratios)'],
    [
      ['empty sluice.jobs', fmt(empty), '1.00×', '1.00×'],
      [
        `${fmt(f.rows)} completed rows`,
        fmt(full),
        empty && full ? `${fmt(full / empty, 2)}×` : '–',
        f.medianPairedRatio !== undefined ? `${fmt(f.medianPairedRatio, 2)}× (${f.pairedRatios.map((x) => fmt(x, 2)).join(', ')})` : '–',
      ],
    ],
  );
}

function renderLong(r: LongResult): string {
  return markdownTable(
    ['jobs done', 'elapsed s', 'jobs/s (interval)', 'RSS MB', 'heap after GC MB'],
    r.checkpoints.map((cp) => [
      fmt(cp.handled),
      fmt(cp.elapsedMs / 1000, 1),
      fmt(cp.intervalJobsPerSec),
      fmt(cp.rssMB, 1),
      fmt(cp.heapUsedMB, 1),
    ]),
  );
}

// ---------------------------------------------------------------------------------------------
// main

const FINISHED_DB = 'bench_sluice_finished';
const dbName = (system: SystemName) => `bench_${system}`;

function gitCommit(): string | null {
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' });
  if (head.status !== 0) return null;
  const dirty = spawnSync('git', ['status', '--porcelain', '--', 'src', 'sql'], { cwd: repoRoot, encoding: 'utf8' });
  return head.stdout.trim() + (dirty.stdout.trim() ? '+dirty' : '');
}

async function connect(url: string, applicationName = MONITOR_APP): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url, application_name: applicationName });
  c.on('error', (err) => log(`${applicationName} connection error: ${err.message}`));
  await c.connect();
  clients.push(c);
  return c;
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  if (opts.cpuProfDir) profileChildrenInto(opts.cpuProfDir);
  const systems = systemsFor(opts);
  const adapters = new Map<SystemName, SystemAdapter>();
  const variants: VariantInfo[] = [];
  for (const s of systems) {
    adapters.set(s, await loadAdapter(s));
    variants.push(...(await loadVariants(s)).filter((v) => !opts.variants || opts.variants.includes(v.id)));
  }
  const unknown = opts.variants?.filter((id) => !variants.some((v) => v.id === id)) ?? [];
  if (unknown.length) throw new Error(`--variants: unknown ${unknown.join(', ')} for --only ${opts.only.join(',')} (known: ${(await Promise.all(systems.map(loadVariants))).flat().map((v) => v.id).join(', ')})`);

  const loadAtStart = os.loadavg();
  if (loadAtStart[0]! > os.cpus().length * 0.5) {
    log(
      `warning: the machine is busy (load average ${loadAtStart.map((x) => x.toFixed(2)).join(', ')} on ${os.cpus().length} CPUs); ` +
        'other work skews every figure, though interleaving keeps the ratios comparable',
    );
  }
  tempDir = mkdtempSync(path.join(os.tmpdir(), 'sluice-bench-'));
  chmodSync(tempDir, 0o755);
  const settings = serverSettings(opts);
  log(`starting PostgreSQL (${describeSettings(settings)})`);
  cluster = await LocalCluster.create({ dataDir: path.join(tempDir, 'data'), settings });
  await cluster.start();
  const c = cluster;
  const monitor = await connect(c.url());
  const serverVersion = (await monitor.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v;
  log(`PostgreSQL ${serverVersion} on 127.0.0.1:${c.port}`);

  const admin = new Map<SystemName, pg.Client>();
  for (const s of systems) {
    await monitor.query(`CREATE DATABASE ${dbName(s)}`);
    await adapters.get(s)!.install(c.url(dbName(s)));
    admin.set(s, await connect(c.url(dbName(s))));
    log(`installed ${adapters.get(s)!.version()} in database ${dbName(s)}`);
  }
  const env: Env = { opts, adapters, variants, admin, monitor, url: (s) => c.url(dbName(s)), records: [] };
  const state: RunState = { env, started: new Date(), serverVersion, loadAtStart };
  current = state;

  const scenarioEnv: ScenarioEnv = {
    adapter: (s) => adapters.get(s)!,
    url: env.url,
    admin: (s) => admin.get(s)!,
    reset: (s) => resetSystem(env, s),
    connect,
    stallMs: opts.stallMs,
  };

  if (opts.long) {
    state.long = await runLong(env);
  } else if (!roundsMode(opts)) {
    if (opts.notify) {
      const n = opts.notify;
      log(
        `notify: ${n.rounds} round(s) of: ${n.seconds} s of add_job throughput per run at ${n.clients.join(', ')} clients, ` +
          `triggers enabled and disabled; ${n.seconds} s of pickup with ${Math.max(...n.clients)} producers at ${n.rate} jobs/s; ` +
          `${n.delayedCommits} commits ${n.holdMs / 1000} s after their insert`,
      );
      state.notify = noNotifyRuns();
      await runNotify(scenarioEnv, n, variants.filter((v) => v.system === 'graphile'), state.notify);
    }
    if (opts.pressure) {
      const p = opts.pressure;
      const measured = variants.filter((v) => PRESSURE_SYSTEMS.includes(v.system));
      log(
        `pressure: ${p.kinds.join(', ')}; ${p.rate} jobs/s from ${p.producers} producers; phases ${p.phases.join(', ')} s; ` +
          `${measured.map((v) => `${v.label} (${v.describe(p.concurrency)})`).join('; ')}`,
      );
      state.pressure = [];
      await runPressure(scenarioEnv, measured, p, state.pressure);
    }
  } else {
    const finishedOn = opts.finishedRows > 0 && systems.includes('sluice');
    if (opts.finishedRows > 0 && !finishedOn) log('--finished-rows needs sluice: skipped');
    if (finishedOn) {
      await monitor.query(`CREATE DATABASE ${FINISHED_DB}`);
      await adapters.get('sluice')!.install(c.url(FINISHED_DB));
      const fdb = await connect(c.url(FINISHED_DB));
      const sluice = await import('./systems/sluice.js');
      log(`filling ${FINISHED_DB} with ${fmt(opts.finishedRows)} completed jobs`);
      const tFill = Date.now();
      await sluice.fillFinished(fdb, opts.finishedRows, (done) => log(`  ${fmt(done)} rows`));
      log(`  filled and vacuumed in ${fmt((Date.now() - tFill) / 1000, 1)} s`);
      env.finished = { url: c.url(FINISHED_DB), admin: fdb };
    }
    log(
      `plan: ${opts.rounds} round(s); ${fmt(opts.jobs)} jobs per run; work-off at concurrency ${opts.concurrency.join(', ')}; ` +
        `latency ${opts.latencySeconds} s at ${opts.latencyRate} jobs/s; systems: ${variants.map((v) => v.label).join(', ')}`,
    );
    for (const v of variants) {
      for (const cc of opts.concurrency) log(`  ${v.label} c=${cc}: ${v.describe(cc)}`);
    }
    if (opts.warmup && opts.scenarios.includes('workoff')) {
      // one small unrecorded work-off per configuration: first-use costs (caches, a system's
      // one-off maintenance after install) are not what the rounds measure
      const jobs = Math.min(2_000, opts.jobs);
      log(`warm-up: ${fmt(jobs)} jobs through each worker, not recorded`);
      for (const v of variants) {
        await resetSystem(env, v.system);
        const { r } = await workoffChild(env, v.system, v.id, env.url(v.system), dbName(v.system), Math.min(...opts.concurrency), jobs);
        log(`  warm-up   ${v.label.padEnd(30)} ${fmt(r.jobsPerSec).padStart(8)} jobs/s`);
      }
    }
    for (let round = 0; round < opts.rounds; round++) {
      log(`round ${round + 1}/${opts.rounds}`);
      if (opts.scenarios.includes('enqueue')) {
        for (const s of rotate(systems, round)) await measureEnqueue(env, round, s);
      }
      if (opts.scenarios.includes('workoff')) {
        for (const cc of opts.concurrency) {
          for (const v of rotate(variants, round)) await measureWorkoff(env, round, v, cc);
        }
      }
      if (opts.scenarios.includes('latency')) {
        for (const v of rotate(variants, round)) await measureLatency(env, round, v);
      }
      if (env.finished) {
        const cc = Math.max(...opts.concurrency);
        for (const withRows of rotate([false, true], round)) await measureFinished(env, round, withRows, cc);
      }
    }
  }
  report(state);
}

interface RunState {
  env: Env;
  started: Date;
  serverVersion: string;
  loadAtStart: number[];
  long?: LongResult;
  notify?: NotifyRuns;
  pressure?: PressureRun[];
}

/** The systems the run installs. */
function systemsFor(opts: Options): SystemName[] {
  if (opts.long) return ['sluice'];
  if (roundsMode(opts)) return opts.only;
  return opts.only.filter((s) => (opts.notify && NOTIFY_SYSTEMS.includes(s)) || (opts.pressure && PRESSURE_SYSTEMS.includes(s)));
}

/** The run in progress, so that a failed or interrupted run still reports what it measured. */
let current: RunState | undefined;
let reported = false;

/** Prints the table and writes the results file; `incomplete` says why the run ended early. */
function report(state: RunState, incomplete?: string): void {
  if (reported) return;
  reported = true;
  const { env, started, serverVersion, loadAtStart, long, notify, pressure } = state;
  const { opts, variants, adapters } = env;
  const settings = serverSettings(opts);
  const finishedAt = new Date();
  const summary = roundsMode(opts) ? summarize(env) : [];
  const out: string[] = [];
  out.push('');
  if (incomplete) out.push(`INCOMPLETE RUN (${incomplete}): the figures below cover only the runs that finished.`);
  out.push(
    `sluice benchmark, ${started.toISOString()}: PostgreSQL ${serverVersion} (${describeSettings(settings)}), ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}`,
  );
  if (long) {
    out.push(`long run: ${fmt(long.jobs)} jobs through one sluice worker in ${fmt(long.elapsedMs / 1000, 1)} s = ${fmt(long.jobsPerSec)} jobs/s, peak RSS ${fmt(long.rssPeakMB, 1)} MB`);
    out.push('');
    out.push(renderLong(long));
  } else if (!roundsMode(opts)) {
    if (notify && opts.notify) out.push('', renderNotify(notify, opts.notify));
    if (pressure && opts.pressure) out.push(renderPressure(pressure, opts.pressure, describeSettings(settings)));
  } else if (summary.length) {
    out.push(
      `${opts.rounds} interleaved round(s), ${fmt(opts.jobs)} jobs per run; medians of the rounds (peak connections: the highest). ` +
        '↑ higher is better, ↓ lower is better; a ratio is sluice\'s figure divided by the peer\'s.',
    );
    out.push('');
    out.push(renderSummary(env, summary));
    const fin = renderFinished(env);
    if (fin) {
      out.push('');
      out.push(fin);
    }
  }
  process.stdout.write(out.join('\n') + '\n');

  const results = {
    incomplete: incomplete ?? null,
    startedAt: started.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationSeconds: (finishedAt.getTime() - started.getTime()) / 1000,
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? null,
      memoryGB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
      platform: `${os.platform()} ${os.release()}`,
      node: process.version,
      loadAverageAtStart: loadAtStart,
      loadAverageAtEnd: os.loadavg(),
    },
    server: { version: serverVersion, settings },
    sluiceCommit: gitCommit(),
    systems: Object.fromEntries([...adapters].map(([s, a]) => [s, a.version()])),
    options: { ...opts, out: path.relative(repoRoot, opts.out) },
    variants: variants.map((v) => ({
      id: v.id,
      system: v.system,
      label: v.label,
      configuration: Object.fromEntries(opts.concurrency.map((cc) => [`c=${cc}`, v.describe(cc)])),
    })),
    summary,
    finishedRows: env.finished ? (finishedSummary(env) ?? null) : null,
    long: long ?? null,
    notify: notify && opts.notify ? { summary: notifySummary(notify, opts.notify), runs: notify } : null,
    pressure: pressure ? pressure.map((r) => ({ ...r, phaseRows: phaseRows(r), targets: pressureTargets(r) })) : null,
    latencyPooled: Object.fromEntries(
      variants.map((v) => {
        const xs = env.records
          .filter((r) => r.scenario === 'latency' && r.variant === v.id)
          .flatMap((r) => (r.result as LatencyResult).latenciesMs);
        return [v.id, { n: xs.length, p50: percentile(xs, 50), p95: percentile(xs, 95), p99: percentile(xs, 99), max: max(xs) }];
      }),
    ),
    runs: env.records,
  };
  mkdirSync(path.dirname(opts.out), { recursive: true });
  writeFileSync(opts.out, JSON.stringify(results, null, 2) + '\n');
  log(`results written to ${path.relative(process.cwd(), opts.out)} (${fmt(results.durationSeconds)} s)${incomplete ? ', incomplete' : ''}`);
}

/** After a failure or Ctrl-C: report whatever was measured. */
function reportPartial(reason: string): void {
  if (!current || reported) return;
  const { env, long, notify, pressure } = current;
  const notifyRuns = notify ? notify.throughput.length + notify.pickup.length + notify.delayed.length : 0;
  if (env.records.length === 0 && !long && !notifyRuns && !pressure?.length) return;
  try {
    report(current, reason);
  } catch (err) {
    log(`could not write the partial results: ${(err as Error).message}`);
  }
}

try {
  await main();
} catch (err) {
  process.exitCode = 1;
  if (!interrupted) {
    log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    reportPartial(`failed: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
  }
} finally {
  await cleanup();
}
