// The worker's lease: a heartbeat renews it for every job the worker holds. The same beat asks
// which of its running jobs it no longer holds (cancelled, rescued), the polling backstop for the
// cancel notification, and measures the database clock so delayed jobs start on its time.
import type pg from 'pg';
import { withClient } from '../db/pool.js';
import { errorSummary } from '../db/errors.js';
import type { Queries } from '../db/queries.js';
import type { Logger } from '../log.js';

export interface WorkerIdentity {
  id: string;
  host: string;
  pid: number;
  queues: string[];
  concurrency: number;
  poolSize: number;
  version: string;
}

export interface HeartbeatOptions {
  pool: pg.Pool;
  queries: Queries;
  identity: WorkerIdentity;
  intervalMs: number;
  /** Jobs running here now: ids and their fencing tokens. */
  held(): { ids: string[]; tokens: string[] };
  /** Called with jobs this worker runs but no longer holds. */
  onLost(jobs: { id: string; status: string | null }[]): void;
  log: Logger;
}

export async function registerWorker(pool: pg.Pool, queries: Queries, w: WorkerIdentity): Promise<void> {
  await withClient(pool, (c) =>
    queries.register_worker.run(c, w),
  );
}

export async function deregisterWorker(pool: pg.Pool, queries: Queries, id: string): Promise<void> {
  await withClient(pool, (c) => queries.deregister_worker.run(c, { id }));
}

const MAX_CLOCK_SAMPLE_RTT_MS = 10;
/** A claim older than this that the worker does not know of was lost in transit. */
const ORPHAN_AFTER_MS = 10_000;

export class Heartbeat {
  /** Database clock minus local clock, in ms. */
  clockOffsetMs = 0;
  lastBeatAt = 0;
  /** Start of the current run of successful heartbeats (0 while failing). */
  healthySince = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<void> | undefined;

  constructor(private readonly opts: HeartbeatOptions) {}

  start(): void {
    this.schedule(0);
  }

  /** The database answered a heartbeat within the last three intervals. */
  get healthy(): boolean {
    return Date.now() - this.lastBeatAt <= 3 * this.opts.intervalMs;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.beat().finally(() => {
        this.running = undefined;
        this.schedule(this.opts.intervalMs);
      });
    }, ms);
  }

  private async beat(): Promise<void> {
    const { pool, queries, identity, log } = this.opts;
    try {
      const held = this.opts.held();
      const { alive, lost, orphans } = await withClient(pool, async (c) => {
        const t0 = Date.now();
        const hb = await queries.heartbeat.run(c, { workerId: identity.id });
        const t1 = Date.now();
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
      this.lastBeatAt = Date.now();
      if (!this.healthySince) this.healthySince = this.lastBeatAt;
      if (lost.length) this.opts.onLost(lost.map((r) => ({ id: String(r.id), status: r.status ?? null })));
    } catch (err) {
      this.healthySince = 0;
      log.warn({ err: errorSummary(err) }, 'heartbeat failed');
    }
  }
}
