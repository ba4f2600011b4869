// Puts back the jobs of workers that stopped heartbeating (SIGKILL, lost network, long pause).
// Every worker runs it; row locks in the rescue statement make each rescue happen once.
import type pg from 'pg';
import { withClient } from '../db/pool.js';
import { errorSummary } from '../db/errors.js';
import type { Queries } from '../db/queries.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { jittered } from '../util/backoff.js';

export interface RescuerOptions {
  pool: pg.Pool;
  queries: Queries;
  /** A job is rescued at most this long after its worker's last heartbeat. */
  rescueAfterMs: number;
  /**
   * Since when this worker's own heartbeats have succeeded without a break. Only a worker that has
   * been watching for as long as the dead-after window may judge others dead: after a database
   * outage every worker's heartbeat is stale, and none of them is dead.
   */
  healthySince(): number;
  log: Logger;
  metrics: Metrics;
}

/** Silence after which a worker counts as dead; the rest of rescueAfterMs is the check interval. */
export function rescueTiming(rescueAfterMs: number): { deadAfterMs: number; everyMs: number } {
  const everyMs = Math.max(100, Math.floor(rescueAfterMs / 4));
  return { deadAfterMs: rescueAfterMs - everyMs, everyMs };
}

export class Rescuer {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<void> | undefined;
  private readonly timing: { deadAfterMs: number; everyMs: number };

  constructor(private readonly opts: RescuerOptions) {
    this.timing = rescueTiming(opts.rescueAfterMs);
  }

  start(): void {
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** One rescue pass; returns the jobs it put back or failed. */
  async rescueNow(): Promise<{ id: string; status: string }[]> {
    const { pool, queries, log, metrics } = this.opts;
    const since = this.opts.healthySince();
    if (!since || Date.now() - since < this.timing.deadAfterMs) return [];
    const res = await withClient(pool, (c) => queries.rescue_jobs.run(c, { deadAfterMs: this.timing.deadAfterMs }));
    for (const r of res.rows) {
      metrics.jobRescued({ queue: r.queue, task: r.task });
      log.warn({ jobId: String(r.id), task: r.task, queue: r.queue, lostWorker: r.locked_by, status: r.status }, 'rescued a job from a lost worker');
    }
    return res.rows.map((r) => ({ id: String(r.id), status: r.status }));
  }

  private schedule(): void {
    if (this.stopped) return;
    // jitter keeps workers that started together from rescuing in lockstep
    const delay = jittered(this.timing.everyMs);
    this.timer = setTimeout(() => {
      this.running = this.rescueNow()
        .then(() => undefined, (err) => this.opts.log.warn({ err: errorSummary(err) }, 'rescue pass failed'))
        .finally(() => {
          this.running = undefined;
          this.schedule();
        });
    }, delay);
  }
}
