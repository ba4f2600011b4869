// Deletes finished jobs past their retention, in small batches, one pruner at a time across all
// workers (an advisory lock), so the table holds what operators want to look at and no more.
// Recorded cron ticks go too, once older than any job retention (and at least a day), each
// recurring job's latest tick excepted.
import type pg from 'pg';
import { transaction } from '../db/pool.js';
import type { Queries } from '../db/queries.js';
import type { Logger } from '../observe/logger.js';
import { PeriodicService } from './service.js';

export interface PrunerOptions {
  pool: pg.Pool;
  queries: Queries;
  keepCompletedMs: number;
  keepFailedMs: number;
  everyMs: number;
  batchSize?: number;
  log: Logger;
}

export class Pruner extends PeriodicService {
  readonly name = 'pruner';
  protected readonly failureMessage = 'pruning failed';

  constructor(private readonly opts: PrunerOptions) {
    super({ everyMs: opts.everyMs, log: opts.log });
  }

  protected override enabled(): boolean {
    return this.opts.keepCompletedMs >= 0 || this.opts.keepFailedMs > 0;
  }

  /** Prunes until a batch comes back short; returns how many jobs it deleted. */
  async pruneNow(): Promise<number> {
    const { pool, queries, keepCompletedMs, keepFailedMs } = this.opts;
    const batchSize = this.opts.batchSize ?? 1000;
    let total = 0;
    for (;;) {
      const deleted = await transaction(pool, async (c) => {
        if (!(await queries.prune_lock.run(c, {})).rows[0]!.got) return 0;
        return (await queries.prune_jobs.run(c, { keepCompletedMs, keepFailedMs, batchSize })).rowCount ?? 0;
      });
      total += deleted;
      if (deleted < batchSize || this.isStopped) return total;
    }
  }

  protected async runOnce(): Promise<void> {
    const deleted = await this.pruneNow();
    if (deleted) this.opts.log.info({ deleted }, 'pruned finished jobs past their retention');
    const { pool, queries, keepCompletedMs, keepFailedMs } = this.opts;
    const keepMs = Math.max(keepCompletedMs, keepFailedMs, 86_400_000);
    await transaction(pool, async (c) => {
      if ((await queries.prune_lock.run(c, {})).rows[0]!.got) await queries.prune_cron_ticks.run(c, { keepMs });
    });
  }
}
