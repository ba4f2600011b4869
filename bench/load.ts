// The child's side of the load runs (the notify scenario's pickup under load, the pressure
// scenario): producers that add single jobs on a clock, a log of every job's moments, and what
// that log says per phase and per second.
import pg from 'pg';
import { now, percentile, sleep, spread } from './measure.js';
import type { LoadPhaseResult, LoadResult, LoadSecond, PhaseSpec } from './protocol.js';
import { PRODUCER_APP, type Producer } from './systems/types.js';

/** Numbers indexed by a job's seq, NaN where nothing was recorded; grows as needed. */
class Column {
  private data = new Float64Array(4096).fill(NaN);

  get(i: number): number {
    return i < this.data.length ? this.data[i]! : NaN;
  }

  set(i: number, v: number): void {
    if (i >= this.data.length) {
      const grown = new Float64Array(Math.max(i + 1, this.data.length * 2)).fill(NaN);
      grown.set(this.data);
      this.data = grown;
    }
    this.data[i] = v;
  }
}

/** The moments of every job of a load run, on this process's monotonic clock (ms). */
export class JobLog {
  readonly due = new Column();
  readonly begin = new Column();
  readonly commitSent = new Column();
  readonly commitReturned = new Column();
  readonly started = new Column();
  /** Highest seq begun + 1. */
  size = 0;
}

export async function producerClients(url: string, n: number): Promise<pg.Client[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const c = new pg.Client({ connectionString: url, application_name: PRODUCER_APP });
      c.on('error', () => undefined);
      await c.connect();
      return c;
    }),
  );
}

/**
 * Adds one job in a transaction of its own on `tx`. Returns when COMMIT was sent (pg writes a
 * query to the socket synchronously; the job cannot be seen before) and when it returned.
 */
export async function addInTransaction(
  tx: pg.ClientBase,
  producer: Producer,
  seq: number,
): Promise<{ commitSent: number; commitReturned: number }> {
  await tx.query('BEGIN');
  try {
    await producer.addOneIn(tx, { seq });
  } catch (err) {
    await tx.query('ROLLBACK');
    throw err;
  }
  const commitSent = now();
  await tx.query('COMMIT');
  return { commitSent, commitReturned: now() };
}

/**
 * Producers adding one job per transaction at a combined `rate`: job `seq` is due at
 * t0 + seq / rate and goes to producer seq mod n. Each producer waits for its next job's due time
 * by the clock (not a fixed sleep after each send), so a slow commit makes the next send late
 * but does not shift the schedule: the offered load stays `rate` as long as the producers can.
 */
export class ScheduledProducers {
  error: Error | undefined;
  committed = 0;
  lastCommitAt: number;
  private stopped = false;
  private readonly loops: Promise<void>[];

  constructor(
    clients: pg.Client[],
    private readonly producer: Producer,
    rate: number,
    t0: number,
    private readonly jobs: JobLog,
  ) {
    this.lastCommitAt = t0;
    const every = 1000 / rate;
    this.loops = clients.map((tx, k) =>
      this.run(tx, k, clients.length, t0, every).catch((err: Error) => {
        this.error ??= err;
      }),
    );
  }

  private async run(tx: pg.Client, first: number, step: number, t0: number, every: number): Promise<void> {
    for (let seq = first; !this.stopped; seq += step) {
      const due = t0 + seq * every;
      const wait = due - now();
      if (wait > 0) await sleep(wait);
      if (this.stopped) return;
      this.jobs.due.set(seq, due);
      this.jobs.begin.set(seq, now());
      this.jobs.size = Math.max(this.jobs.size, seq + 1);
      const { commitSent, commitReturned } = await addInTransaction(tx, this.producer, seq);
      this.jobs.commitSent.set(seq, commitSent);
      this.jobs.commitReturned.set(seq, commitReturned);
      this.committed++;
      this.lastCommitAt = commitReturned;
    }
  }

  /** Lets every producer finish its transaction in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }
}

interface Bucket {
  sent: number;
  committed: number;
  started: number;
  sendLag: number[];
  pickup: number[];
  pickupAfterReturn: number[];
  producer: number[];
  commit: number[];
  neverStarted: number;
}

const emptyBucket = (): Bucket => ({
  sent: 0,
  committed: 0,
  started: 0,
  sendLag: [],
  pickup: [],
  pickupAfterReturn: [],
  producer: [],
  commit: [],
  neverStarted: 0,
});

/**
 * Per phase and per second, from the job log. `bounds` are the phases' start moments and the
 * end. A job's latencies belong to the phase (second) in which its COMMIT was sent; the counts
 * to the phase in which each event happened.
 */
export function summarizeLoad(
  jobs: JobLog,
  bounds: number[],
  phases: PhaseSpec[],
  settings: { producers: number; rate: number; concurrency: number },
  unstartedAtEnd: number,
): LoadResult {
  const t0 = bounds[0]!;
  const end = bounds[bounds.length - 1]!;
  const phaseOf = (t: number): number => {
    if (!(t >= t0 && t < end)) return -1;
    let i = 0;
    while (t >= bounds[i + 1]!) i++;
    return i;
  };
  const secondOf = (t: number): number => (t >= t0 && t < end ? Math.floor((t - t0) / 1000) : -1);
  const perPhase = phases.map(emptyBucket);
  const perSecond = Array.from({ length: Math.ceil((end - t0) / 1000) }, emptyBucket);
  const into = (buckets: Bucket[], i: number, add: (b: Bucket) => void) => {
    if (i >= 0) add(buckets[i]!);
  };
  for (let seq = 0; seq < jobs.size; seq++) {
    const begin = jobs.begin.get(seq);
    const sent = jobs.commitSent.get(seq);
    const returned = jobs.commitReturned.get(seq);
    const started = jobs.started.get(seq);
    into(perPhase, phaseOf(begin), (b) => {
      b.sent++;
      b.sendLag.push(begin - jobs.due.get(seq));
    });
    for (const [buckets, at] of [
      [perPhase, phaseOf],
      [perSecond, secondOf],
    ] as const) {
      into(buckets, at(returned), (b) => b.committed++);
      into(buckets, at(started), (b) => b.started++);
      if (!Number.isFinite(returned)) continue;
      into(buckets, at(sent), (b) => {
        b.producer.push(returned - begin);
        b.commit.push(returned - sent);
        if (Number.isFinite(started)) {
          b.pickup.push(started - sent);
          b.pickupAfterReturn.push(started - returned);
        } else {
          b.neverStarted++;
        }
      });
    }
  }
  let backlog = 0;
  const seconds: LoadSecond[] = perSecond.map((b, second) => {
    backlog += b.committed - b.started;
    return {
      second,
      phase: phaseOf(t0 + second * 1000),
      committed: b.committed,
      started: b.started,
      backlog: Math.max(0, backlog),
      pickupP50Ms: percentile(b.pickup, 50),
      pickupP99Ms: percentile(b.pickup, 99),
      pickupMaxMs: percentile(b.pickup, 100),
      producerP99Ms: percentile(b.producer, 99),
    };
  });
  const phaseResults: LoadPhaseResult[] = phases.map((p, i) => {
    const b = perPhase[i]!;
    const secs = (bounds[i + 1]! - bounds[i]!) / 1000;
    return {
      name: p.name,
      seconds: secs,
      offeredPerSec: settings.rate,
      sentPerSec: b.sent / secs,
      committedPerSec: b.committed / secs,
      startedPerSec: b.started / secs,
      sendLagMs: spread(b.sendLag),
      pickupMs: spread(b.pickup),
      pickupAfterCommitReturnedMs: spread(b.pickupAfterReturn),
      producerMs: spread(b.producer),
      commitMs: spread(b.commit),
      maxBacklog: Math.max(0, ...seconds.filter((s) => s.phase === i).map((s) => s.backlog)),
      neverStarted: b.neverStarted,
    };
  });
  return { ...settings, phases: phaseResults, seconds, unstartedAtEnd };
}
