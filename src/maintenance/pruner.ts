// Deletes finished jobs past their retention, in small batches, one pruner at a time across all
// workers (an advisory lock), so the table holds what operators want to look at and no more.
import type pg from 'pg';
import { transaction } from '../db/pool.js';
import { errorSummary } from '../db/errors.js';
import type { Queries } from '../db/queries.js';
import type { Logger } from '../log.js';
import { jittered } from '../util/backoff.js';

export interface PrunerOptions {
  pool: pg.Pool;
  queries: Queries;
  keepCompletedMs: number;
  keepFailedMs: number;
  everyMs: number;
  batchSize?: number;
  log: Logger;
}

export class Pruner {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private running: Promise<void> | undefined;

  constructor(private readonly opts: PrunerOptions) {}

  start(): void {
    if (this.opts.keepCompletedMs > 0 || this.opts.keepFailedMs > 0) this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** Prunes until a batch comes back short; returns how many jobs it deleted. */
  async pruneNow(): Promise<number> {
    const { pool, queries, keepCompletedMs, keepFailedMs } = this.opts;
    const batch = this.opts.batchSize ?? 1000;
    let total = 0;
    for (;;) {
      const deleted = await transaction(pool, async (c) => {
        const lock = await queries.prune_lock.run(c, {});
        if (!lock.rows[0]!.got) return 0;
        const r = await queries.prune_jobs.run(c, { keepCompletedMs, keepFailedMs, batchSize: batch });
        return r.rowCount ?? 0;
      });
      total += deleted;
      if (deleted < batch || this.stopped) return total;
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.pruneNow()
        .then(
          (n) => n && this.opts.log.info({ deleted: n }, 'pruned finished jobs past their retention'),
          (err) => this.opts.log.warn({ err: errorSummary(err) }, 'pruning failed'),
        )
        .then(() => {
          this.running = undefined;
          this.schedule();
        });
    }, jittered(this.opts.everyMs));
  }
}
