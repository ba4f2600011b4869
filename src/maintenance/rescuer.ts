// Puts back the jobs of workers that stopped heartbeating (SIGKILL, lost network, long pause).
// Every worker runs it; row locks in the rescue statement make each rescue happen once.
import type pg from 'pg';
import { withClient } from '../db/pool.js';
import type { Queries } from '../db/queries.js';
import type { Events } from '../observe/events.js';
import type { Logger } from '../observe/logger.js';
import { PeriodicService } from './service.js';

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
  events: Events;
  log: Logger;
}

/** Silence after which a worker counts as dead; the rest of rescueAfterMs is the check interval. */
export function rescueTiming(rescueAfterMs: number): { deadAfterMs: number; everyMs: number } {
  const everyMs = Math.max(100, Math.floor(rescueAfterMs / 4));
  return { deadAfterMs: rescueAfterMs - everyMs, everyMs };
}

export class Rescuer extends PeriodicService {
  readonly name = 'rescuer';
  protected readonly failureMessage = 'rescue pass failed';
  private readonly deadAfterMs: number;

  constructor(private readonly opts: RescuerOptions) {
    const timing = rescueTiming(opts.rescueAfterMs);
    super({ everyMs: timing.everyMs, log: opts.log });
    this.deadAfterMs = timing.deadAfterMs;
  }

  /** One rescue pass; returns the jobs it put back or failed. */
  async rescueNow(): Promise<{ id: string; status: string }[]> {
    const { pool, queries, events } = this.opts;
    const since = this.opts.healthySince();
    if (!since || this.clock.now() - since < this.deadAfterMs) return [];
    const res = await withClient(pool, (c) => queries.rescue_jobs.run(c, { deadAfterMs: this.deadAfterMs }));
    for (const r of res.rows) {
      events.emit({ type: 'job.rescued', id: String(r.id), queue: r.queue, task: r.task, lostWorker: r.locked_by, status: r.status });
    }
    return res.rows.map((r) => ({ id: String(r.id), status: r.status }));
  }

  protected async runOnce(): Promise<void> {
    await this.rescueNow();
  }
}
