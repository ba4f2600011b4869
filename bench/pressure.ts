// The pressure scenario (--pressure), on a server with fsync on: a steady offered load of single
// jobs through three phases, baseline, pressure, recovery. The pressure is either one session idle
// in a transaction that holds back the xmin horizon (so VACUUM can remove nothing), or a few
// REPEATABLE READ sessions that keep scanning the jobs table. It shows whether a system keeps up,
// and what its pickup latency, its producers and its table do, while dead rows cannot be removed.
import type pg from 'pg';
import { log, runChild, type ScenarioEnv } from './orchestrator.js';
import { behindSchedule, check, fmt, markdownTable, MB, now, renderTargets, sleep, type Target } from './measure.js';
import type { LoadPhaseResult, LoadResult, PhaseSpec } from './protocol.js';
import type { VariantId, VariantInfo } from './systems/types.js';

export type PressureKind = 'held-xmin' | 'readers';
export const PRESSURE_KINDS: PressureKind[] = ['held-xmin', 'readers'];

export interface PressureOptions {
  kinds: PressureKind[];
  rate: number;
  producers: number;
  concurrency: number;
  /** Seconds of baseline, pressure and recovery. */
  phases: [number, number, number];
}

/** The active-readers pressure: how many sessions, how long each transaction lasts, the pause between scans. */
export const READERS = { sessions: 4, transactionMs: 3000, pauseMs: 100 };
/** How often the jobs table's dead rows and sizes are sampled. */
export const SAMPLE_EVERY_MS = 2000;

const HOLDER_APP = 'bench-xmin-holder';
const READER_APP = 'bench-reader';

/** One sample of the jobs table, from pg_stat_user_tables and the size functions. */
export interface TableSample {
  /** Seconds since the baseline began (the orchestrator's clock). */
  at: number;
  phase: number;
  deadTuples: number;
  liveTuples: number;
  /** pg_total_relation_size: heap, indexes and TOAST. */
  totalBytes: number;
  indexBytes: number;
  /** autovacuum_count + vacuum_count so far. */
  vacuums: number;
  /** age(backend_xmin) of the oldest snapshot in the database, in transactions. */
  oldestXminAge: number | null;
}

export interface PressureRun {
  kind: PressureKind;
  system: string;
  variant: VariantId;
  label: string;
  /** The worker's settings at the scenario's concurrency. */
  configuration: string;
  jobsTable: string;
  result: LoadResult;
  samples: TableSample[];
  /** What the pressure did: the holder's transaction id, or the readers' transactions and scans. */
  pressure: { holderXid?: string; transactions?: number; scans?: number; meanScanMs?: number };
}

interface Pressure {
  start(): Promise<void>;
  stop(): Promise<void>;
  describe(): PressureRun['pressure'];
}

/** One session, idle in a transaction that has an xid and a snapshot, for the whole phase. */
class XminHolder implements Pressure {
  private client: pg.Client | undefined;
  private xid: string | undefined;

  constructor(
    private readonly env: ScenarioEnv,
    private readonly url: string,
  ) {}

  async start(): Promise<void> {
    const c = await this.env.connect(this.url, HOLDER_APP);
    this.client = c;
    // the server has it at 0 too; this session must never be cut off by it
    await c.query('SET idle_in_transaction_session_timeout = 0');
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    this.xid = (await c.query<{ xid: string }>('SELECT txid_current()::text AS xid')).rows[0]!.xid;
  }

  async stop(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    if (!c) return;
    await c.query('COMMIT');
    await c.end();
  }

  describe() {
    return { holderXid: this.xid };
  }
}

/** A few sessions, each in REPEATABLE READ transactions of a few seconds, scanning the jobs table. */
class ActiveReaders implements Pressure {
  private clients: pg.Client[] = [];
  private loops: Promise<void>[] = [];
  private stopped = false;
  private wake: () => void = () => undefined;
  private readonly stopping = new Promise<void>((r) => (this.wake = r));
  private error: Error | undefined;
  private transactions = 0;
  private scans = 0;
  private scanMs = 0;

  constructor(
    private readonly env: ScenarioEnv,
    private readonly url: string,
    private readonly table: string,
  ) {}

  async start(): Promise<void> {
    this.clients = await Promise.all(Array.from({ length: READERS.sessions }, () => this.env.connect(this.url, READER_APP)));
    // staggered, so that some reader's snapshot is always recent and another's a few seconds old
    const stagger = READERS.transactionMs / READERS.sessions;
    this.loops = this.clients.map((c, k) =>
      this.read(c, k * stagger).catch((err: Error) => {
        this.error ??= err;
      }),
    );
  }

  private async read(c: pg.Client, delayMs: number): Promise<void> {
    await Promise.race([sleep(delayMs), this.stopping]);
    while (!this.stopped) {
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      const until = now() + READERS.transactionMs;
      do {
        const t = now();
        await c.query(`SELECT count(*) FROM ${this.table}`);
        this.scanMs += now() - t;
        this.scans++;
        await Promise.race([sleep(READERS.pauseMs), this.stopping]);
      } while (now() < until && !this.stopped);
      await c.query('COMMIT');
      this.transactions++;
    }
  }

  /** Each reader finishes its scan in progress and commits. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake();
    await Promise.all(this.loops);
    await Promise.all(this.clients.map((c) => c.end()));
    this.clients = [];
    if (this.error) throw new Error(`an active reader failed: ${this.error.message}`);
  }

  describe() {
    return { transactions: this.transactions, scans: this.scans, meanScanMs: this.scans ? this.scanMs / this.scans : undefined };
  }
}

/** Samples the jobs table every SAMPLE_EVERY_MS, and once at every phase change. */
class TableSampler {
  readonly samples: TableSample[] = [];
  private phase = 0;
  private t0 = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private halted = false;
  private error: Error | undefined;

  constructor(
    private readonly db: pg.Client,
    private readonly table: string,
  ) {}

  /** Phase 0 starts the sampling, phase `last` stops it. */
  async enter(phase: number, last: number): Promise<void> {
    if (phase === 0) this.t0 = now();
    await this.stop();
    this.phase = phase;
    if (phase === last) {
      // the end: one more sample of the last phase
      await this.sample(last - 1);
      return;
    }
    this.halted = false;
    this.running = this.tick();
  }

  private async tick(): Promise<void> {
    try {
      await this.sample(this.phase);
    } catch (err) {
      this.error ??= err as Error;
      return;
    }
    if (!this.halted) this.timer = setTimeout(() => (this.running = this.tick()), SAMPLE_EVERY_MS);
  }

  /** Waits for a sample in progress; fails if a sample failed. */
  async stop(): Promise<void> {
    this.halted = true;
    clearTimeout(this.timer);
    await this.running;
    if (this.error) throw new Error(`sampling ${this.table} failed: ${this.error.message}`);
  }

  private async sample(phase: number): Promise<void> {
    const r = await this.db.query<{
      dead: string;
      live: string;
      total: string;
      indexes: string;
      vacuums: string;
      xmin_age: string | null;
    }>(
      `SELECT n_dead_tup AS dead, n_live_tup AS live, autovacuum_count + vacuum_count AS vacuums,
              pg_total_relation_size(relid) AS total, pg_indexes_size(relid) AS indexes,
              (SELECT max(age(backend_xmin)) FROM pg_stat_activity WHERE datname = current_database()) AS xmin_age
         FROM pg_stat_user_tables WHERE relid = $1::regclass`,
      [this.table],
    );
    const row = r.rows[0];
    if (!row) throw new Error(`${this.table} is not in pg_stat_user_tables`);
    this.samples.push({
      at: (now() - this.t0) / 1000,
      phase,
      deadTuples: Number(row.dead),
      liveTuples: Number(row.live),
      totalBytes: Number(row.total),
      indexBytes: Number(row.indexes),
      vacuums: Number(row.vacuums),
      oldestXminAge: row.xmin_age === null ? null : Number(row.xmin_age),
    });
  }
}

function phasesFor(kind: PressureKind, seconds: [number, number, number]): PhaseSpec[] {
  return [
    { name: 'baseline', seconds: seconds[0] },
    { name: kind === 'held-xmin' ? 'held xmin' : 'active readers', seconds: seconds[1] },
    { name: 'recovery', seconds: seconds[2] },
  ];
}

/** Every kind of pressure, for every variant in turn; each run is added to `runs` as it finishes. */
export async function runPressure(env: ScenarioEnv, variants: VariantInfo[], opts: PressureOptions, runs: PressureRun[]): Promise<void> {
  for (const kind of opts.kinds) {
    for (const v of variants) {
      const run = await pressureRun(env, v, kind, opts);
      runs.push(run);
      for (const row of phaseRows(run)) {
        log(
          `  pressure  ${`${v.label}, ${row.phase}`.padEnd(40)} ${fmt(row.startedPerSec).padStart(6)} run/s of ${fmt(row.offeredPerSec)} ` +
            `offered, pickup p99 ${fmt(row.pickupP99Ms, 1)} ms, producer p99 ${fmt(row.producerP99Ms, 1)} ms, ` +
            `dead tuples max ${fmt(row.deadTuplesMax)}, table ${fmt(row.tableMBMax, 1)} MB`,
        );
      }
    }
  }
}

async function pressureRun(env: ScenarioEnv, v: VariantInfo, kind: PressureKind, opts: PressureOptions): Promise<PressureRun> {
  const adapter = env.adapter(v.system);
  const url = env.url(v.system);
  await env.reset(v.system);
  const phases = phasesFor(kind, opts.phases);
  log(`pressure ${kind}: ${v.label}, ${phases.map((p) => `${p.name} ${p.seconds} s`).join(', ')}`);
  const sampler = new TableSampler(env.admin(v.system), adapter.jobsTable);
  const pressure: Pressure = kind === 'held-xmin' ? new XminHolder(env, url) : new ActiveReaders(env, url, adapter.jobsTable);
  try {
    const result = await runChild<LoadResult>(
      {
        mode: 'load',
        system: v.system,
        variant: v.id,
        url,
        concurrency: opts.concurrency,
        producers: opts.producers,
        rate: opts.rate,
        phases,
        stallMs: env.stallMs,
      },
      {
        onPhase: async (index) => {
          if (index === 1) await pressure.start();
          if (index === 2) await pressure.stop();
          await sampler.enter(index, phases.length);
        },
      },
    );
    return {
      kind,
      system: v.system,
      variant: v.id,
      label: v.label,
      configuration: v.describe(opts.concurrency),
      jobsTable: adapter.jobsTable,
      result,
      samples: sampler.samples,
      pressure: pressure.describe(),
    };
  } finally {
    await sampler.stop().catch(() => undefined);
    await pressure.stop().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// summary

export interface PressurePhaseRow {
  phase: string;
  seconds: number;
  offeredPerSec: number;
  committedPerSec: number;
  startedPerSec: number;
  maxBacklog: number;
  pickupP50Ms: number | null;
  pickupP99Ms: number | null;
  pickupMaxMs: number | null;
  producerP50Ms: number | null;
  producerP99Ms: number | null;
  sendLagP99Ms: number | null;
  deadTuplesMax: number | null;
  tableMBMax: number | null;
  indexesMBMax: number | null;
  oldestXminAgeMax: number | null;
}

const maxOf = (xs: number[]) => (xs.length ? Math.max(...xs) : null);

export function phaseRows(run: PressureRun): PressurePhaseRow[] {
  return run.result.phases.map((p: LoadPhaseResult, i) => {
    const samples = run.samples.filter((s) => s.phase === i);
    return {
      phase: p.name,
      seconds: p.seconds,
      offeredPerSec: p.offeredPerSec,
      committedPerSec: p.committedPerSec,
      startedPerSec: p.startedPerSec,
      maxBacklog: p.maxBacklog,
      pickupP50Ms: p.pickupMs.p50,
      pickupP99Ms: p.pickupMs.p99,
      pickupMaxMs: p.pickupMs.max,
      producerP50Ms: p.producerMs.p50,
      producerP99Ms: p.producerMs.p99,
      sendLagP99Ms: p.sendLagMs.p99,
      deadTuplesMax: maxOf(samples.map((s) => s.deadTuples)),
      tableMBMax: maxOf(samples.map((s) => s.totalBytes / MB)),
      indexesMBMax: maxOf(samples.map((s) => s.indexBytes / MB)),
      oldestXminAgeMax: maxOf(samples.flatMap((s) => (s.oldestXminAge === null ? [] : [s.oldestXminAge]))),
    };
  });
}

/** The issue's targets for this scenario (reported, not enforced). */
const TARGETS = { keepUp: 0.95, pickupP99Ms: 50, producerP99Factor: 2 };

export function pressureTargets(run: PressureRun): Record<string, Target> {
  const rows = phaseRows(run);
  const [baseline, pressured] = rows;
  const keepUp = Math.min(...rows.map((r) => r.startedPerSec / r.offeredPerSec));
  const producerFactors = rows
    .slice(1)
    .map((r) => (r.producerP99Ms !== null && baseline?.producerP99Ms ? r.producerP99Ms / baseline.producerP99Ms : NaN));
  const worstProducer = Math.max(...producerFactors);
  return {
    [`jobs run >= ${TARGETS.keepUp * 100}% of offered in every phase`]: check(keepUp, (x) => x >= TARGETS.keepUp),
    [`pickup p99 during ${pressured?.phase} <= ${TARGETS.pickupP99Ms} ms`]: check(pressured?.pickupP99Ms, (x) => x <= TARGETS.pickupP99Ms),
    [`producer p99 <= ${TARGETS.producerP99Factor}x baseline`]: check(worstProducer, (x) => x <= TARGETS.producerP99Factor),
  };
}

export function renderPressure(runs: PressureRun[], opts: PressureOptions, settings: string): string {
  const out: string[] = [];
  for (const kind of PRESSURE_KINDS) {
    const mine = runs.filter((r) => r.kind === kind);
    if (!mine.length) continue;
    out.push('');
    out.push(
      `pressure, ${kind === 'held-xmin' ? 'held xmin (one session idle in a REPEATABLE READ transaction with an xid)' : `active readers (${READERS.sessions} REPEATABLE READ sessions, ${READERS.transactionMs / 1000} s transactions, count(*) of the jobs table every ${READERS.pauseMs} ms)`}: ` +
        `${fmt(opts.rate)} jobs/s offered by ${opts.producers} producers, one job per transaction; worker concurrency ${opts.concurrency}; ` +
        `server ${settings}. run/s: jobs whose handler started in the phase. Pickup: handler start minus COMMIT sent; ` +
        'producer: BEGIN to COMMIT returned. Dead tuples and sizes: the highest of the samples every ' +
        `${SAMPLE_EVERY_MS / 1000} s.`,
    );
    out.push('');
    out.push(
      markdownTable(
        ['system', 'phase', 's', 'offered/s', 'committed/s', 'run/s', 'max backlog', 'pickup p50, ms', 'pickup p99, ms', 'pickup max, ms', 'producer p50, ms', 'producer p99, ms', 'dead tuples max', 'table MB max', 'indexes MB max'],
        mine.flatMap((run) =>
          phaseRows(run).map((r) => [
            run.label,
            r.phase,
            fmt(r.seconds),
            fmt(r.offeredPerSec),
            fmt(r.committedPerSec),
            fmt(r.startedPerSec),
            fmt(r.maxBacklog),
            fmt(r.pickupP50Ms, 1),
            fmt(r.pickupP99Ms, 1),
            fmt(r.pickupMaxMs, 1),
            fmt(r.producerP50Ms, 1),
            fmt(r.producerP99Ms, 1),
            fmt(r.deadTuplesMax),
            fmt(r.tableMBMax, 1),
            fmt(r.indexesMBMax, 1),
          ]),
        ),
        2,
      ),
    );
    out.push('');
    for (const run of mine) {
      const notes = [
        behindSchedule(run.result.phases),
        run.result.unstartedAtEnd ? `${fmt(run.result.unstartedAtEnd)} jobs still unstarted when the run ended` : undefined,
      ].filter(Boolean);
      out.push(`targets for ${run.label} (for information): ${renderTargets(pressureTargets(run))}`);
      if (notes.length) out.push(`  note: ${notes.join('; ')}`);
    }
  }
  return out.join('\n');
}
