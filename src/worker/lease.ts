// The worker's lease: its row in the workers table, renewed by a heartbeat, vouches for every job
// it holds (rescuers requeue the jobs of a worker whose heartbeat stops). The same beat asks which
// of its running jobs it no longer holds (cancelled, rescued); puts back claims whose answer was
// lost with a connection; and measures the database clock so delayed jobs start on its time.
// A cancel notification is only a hint (anyone may NOTIFY): it makes the lease ask the database
// about that job sooner, and only the database's answer aborts a handler.
import type pg from 'pg';
import { errorSummary } from '../db/errors.js';
import { withClient } from '../db/pool.js';
import type { Queries } from '../db/queries.js';
import { PeriodicService } from '../maintenance/service.js';
import type { Logger } from '../observe/logger.js';

export interface WorkerIdentity {
  id: string;
  host: string;
  pid: number;
  queues: string[];
  /** The tasks it has handlers for: the only ones it claims. */
  tasks: string[];
  concurrency: number;
  poolSize: number;
  version: string;
}

export interface HeldJobs {
  ids: string[];
  tokens: string[];
}

export interface LeaseOptions {
  pool: pg.Pool;
  queries: Queries;
  identity: WorkerIdentity;
  intervalMs: number;
  /** Jobs running here now: ids and their fencing tokens. */
  held(): HeldJobs;
  /** Called with jobs this worker runs but no longer holds. */
  onLost(jobs: { id: string; status: string | null }[]): void;
  /** How long a job whose hint found it still held is not asked about again (default 1 s). */
  hintQuietMs?: number;
  log: Logger;
}

export async function registerWorker(pool: pg.Pool, queries: Queries, w: WorkerIdentity): Promise<void> {
  await withClient(pool, (c) => queries.register_worker.run(c, w));
}

export async function deregisterWorker(pool: pg.Pool, queries: Queries, id: string): Promise<void> {
  await withClient(pool, (c) => queries.deregister_worker.run(c, { id }));
}

const MAX_CLOCK_SAMPLE_RTT_MS = 10;
/** A claim older than this that the worker does not know of was lost in transit. */
const ORPHAN_AFTER_MS = 10_000;

export class Lease extends PeriodicService {
  readonly name = 'lease';
  protected readonly failureMessage = 'heartbeat failed';
  /** Database clock minus local clock, in ms. */
  clockOffsetMs = 0;
  lastBeatAt = 0;
  /** Start of the current run of successful heartbeats (0 while failing). */
  healthySince = 0;

  private readonly hinted = new Set<string>();
  /** When each job was last asked about because of a hint. */
  private readonly askedAt = new Map<string, number>();
  private asking: Promise<void> | undefined;

  constructor(private readonly opts: LeaseOptions) {
    // a lease must be renewed on time whatever happened to the last beat: no jitter, no back-off
    super({ everyMs: opts.intervalMs, firstRunMs: 0, jitter: false, maxBackoff: 1, log: opts.log });
  }

  /** The database answered a heartbeat within the last three intervals. */
  get healthy(): boolean {
    return this.clock.now() - this.lastBeatAt <= 3 * this.opts.intervalMs;
  }

  /**
   * A notification says job `id` was cancelled. Jobs this worker does not run are ignored; the
   * others are asked about in one query at a time, each at most once per hintQuietMs, so no
   * stream of notifications costs more than that.
   */
  hint(id: string): void {
    const held = this.opts.held();
    if (!held.ids.includes(id)) return;
    const last = this.askedAt.get(id);
    if (last !== undefined && this.clock.now() - last < (this.opts.hintQuietMs ?? 1000)) return;
    this.hinted.add(id);
    this.asking ??= this.askAboutHints().finally(() => {
      this.asking = undefined;
    });
  }

  private async askAboutHints(): Promise<void> {
    while (this.hinted.size && !this.isStopped) {
      const held = this.opts.held();
      const ids: string[] = [];
      const tokens: string[] = [];
      for (const id of this.hinted) {
        const i = held.ids.indexOf(id);
        if (i >= 0) {
          ids.push(id);
          tokens.push(held.tokens[i]!);
          this.askedAt.set(id, this.clock.now());
        }
      }
      this.hinted.clear();
      if (!ids.length) return;
      try {
        const lost = await withClient(this.opts.pool, (c) => this.opts.queries.lost_jobs.run(c, { ids, tokens }));
        if (lost.rows.length) this.opts.onLost(lost.rows.map((r) => ({ id: String(r.id), status: r.status ?? null })));
      } catch (err) {
        // the next heartbeat asks again
        this.opts.log.debug({ err: errorSummary(err) }, 'could not check a cancelled job now; the heartbeat will');
      }
    }
    for (const id of this.askedAt.keys()) if (!this.opts.held().ids.includes(id)) this.askedAt.delete(id);
  }

  protected async runOnce(): Promise<void> {
    try {
      await this.beat();
    } catch (err) {
      this.healthySince = 0;
      throw err;
    }
  }

  private async beat(): Promise<void> {
    const { pool, queries, identity, log } = this.opts;
    const held = this.opts.held();
    const { alive, lost, orphans } = await withClient(pool, async (c) => {
      const t0 = this.clock.now();
      const hb = await queries.heartbeat.run(c, { workerId: identity.id });
      const t1 = this.clock.now();
      // a slow round trip makes a poor clock sample: keep the last good one
      if (hb.rows[0] && t1 - t0 <= MAX_CLOCK_SAMPLE_RTT_MS) this.clockOffsetMs = Number(hb.rows[0].db_ms) - (t0 + t1) / 2;
      const lostRows = held.ids.length ? (await queries.lost_jobs.run(c, held)).rows : [];
      const orphans = await queries.release_orphans.run(c, { workerId: identity.id, runningIds: held.ids, olderThanMs: ORPHAN_AFTER_MS });
      return { alive: hb.rowCount === 1, lost: lostRows, orphans: orphans.rows };
    });
    if (orphans.length) {
      log.warn({ jobs: orphans.map((r) => String(r.id)) }, 'claims whose answer was lost with a connection were put back to queued');
    }
    if (!alive) {
      log.warn('this worker was presumed dead (no heartbeat in time) and its jobs were rescued; registering again');
      await registerWorker(pool, queries, identity);
    }
    this.lastBeatAt = this.clock.now();
    if (!this.healthySince) this.healthySince = this.lastBeatAt;
    if (lost.length) this.opts.onLost(lost.map((r) => ({ id: String(r.id), status: r.status ?? null })));
  }
}
