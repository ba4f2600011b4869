// Keeps the jobs table in the shape that claiming and completing need, instead of waiting for
// autovacuum. Two jobs, checked every 5 s:
// - VACUUM once dead row versions pile up. Every claim and completion leaves one, and a claim
//   walks past the dead entries at the head of the runnable index until VACUUM removes them, so
//   under sustained load claiming slows down several times over while the table waits for
//   autovacuum (measured: 12,000 -> 2,400 jobs/s over two minutes in the long benchmark).
// - ANALYZE once the table has grown to twice the size VACUUM or ANALYZE last recorded. A worker's
//   statements are prepared once per connection and PostgreSQL keeps their generic plans until
//   the table's statistics change; a plan made while the table was nearly empty (a new install,
//   or after pruning) reads the whole table at every claim and completion, however big it has
//   grown since (measured: 17.9 ms and 946 buffers for a claim of 10 jobs at 33,000 rows, against
//   0.15 ms re-planned). ANALYZE makes every session re-plan.
// One worker at a time (an advisory lock for VACUUM, SKIP_LOCKED for ANALYZE); each borrows one
// pool connection for as long as it runs. Retired when this role may not vacuum the table.
// Behind a transaction pooler a session lock, a session timeout and a backend pid mean nothing
// (the next statement may run on another server connection): there VACUUM (SKIP_LOCKED) stands in
// for the lock and the client-side time limit for the server's.
import type pg from 'pg';
import { withClient } from '../db/pool.js';
import type { Queries } from '../db/queries.js';
import type { Logger } from '../observe/logger.js';
import { PeriodicService } from './service.js';

export interface VacuumerOptions {
  pool: pg.Pool;
  queries: Queries;
  /** Vacuum once the table holds more dead row versions than this (0: never; ANALYZE still runs). */
  deadRows: number;
  checkEveryMs: number;
  /** Longest a VACUUM may run before it is cancelled. */
  timeoutMs: number;
  /** database.pooler=transaction: no session state (see the top of this file). */
  pooled?: boolean;
  log: Logger;
}

export type VacuumResult = 'vacuumed' | 'analyzed' | 'not needed' | 'busy' | 'not allowed';

/** Grown past this many pages (1 MB) at least: below it a plan that reads the whole table costs little. */
const ANALYZE_MIN_PAGES = 128;

export class Vacuumer extends PeriodicService {
  readonly name = 'vacuumer';
  protected readonly failureMessage = 'vacuuming the jobs table failed';
  /** The backend running VACUUM for us, so that stop() can cancel it. */
  private vacuumPid: number | undefined;

  constructor(private readonly opts: VacuumerOptions) {
    super({ everyMs: opts.checkEveryMs, log: opts.log });
  }

  /** A VACUUM under way is cancelled rather than waited for. */
  protected override async interrupt(): Promise<void> {
    if (this.vacuumPid !== undefined) {
      await this.opts.queries.cancel_backend.run(this.opts.pool, { pid: this.vacuumPid }).catch(() => undefined);
    }
  }

  /**
   * Vacuums the jobs table if it holds more dead rows than the threshold, or else analyzes it if it
   * has outgrown the size the planner last recorded; neither while another worker is at it.
   */
  async vacuumIfNeeded(): Promise<VacuumResult> {
    const { pool, queries, deadRows, timeoutMs, pooled } = this.opts;
    return withClient(pool, async (c) => {
      const stats = (await queries.jobs_upkeep.run(c, {})).rows[0]!;
      if (!stats.may_vacuum) return 'not allowed';
      if (deadRows <= 0 || Number(stats.dead) <= deadRows) {
        if (stats.pages < Math.max(2 * stats.recorded_pages, ANALYZE_MIN_PAGES)) return 'not needed';
        return (await runUnlessSkipped(c, queries.analyze_jobs.config({}), timeoutMs)) ? 'analyzed' : 'busy';
      }
      if (pooled) return (await runUnlessSkipped(c, queries.vacuum_jobs_skip_locked.config({}), timeoutMs)) ? 'vacuumed' : 'busy';
      if (!(await queries.vacuum_lock.run(c, {})).rows[0]!.got) return 'busy';
      try {
        await queries.vacuum_timeout.run(c, { timeout: String(Math.round(timeoutMs)) });
        this.vacuumPid = (c as unknown as { processID: number }).processID;
        await c.query({ ...queries.vacuum_jobs.config({}), query_timeout: timeoutMs + 5000 } as pg.QueryConfig);
        return 'vacuumed';
      } finally {
        this.vacuumPid = undefined;
        await queries.vacuum_reset_timeout.run(c, {});
        await queries.vacuum_unlock.run(c, {});
      }
    });
  }

  protected async runOnce(): Promise<void> {
    const started = this.clock.now();
    const result = await this.vacuumIfNeeded();
    if (result === 'vacuumed') this.opts.log.info({ ms: this.clock.now() - started }, 'vacuumed the jobs table (dead rows past worker.vacuumDeadRows)');
    if (result === 'analyzed') this.opts.log.info({ ms: this.clock.now() - started }, 'analyzed the jobs table (grown to twice the size its statistics knew)');
    if (result === 'not allowed') {
      this.retire();
      this.opts.log.info('not vacuuming the jobs table: this role does not own it; autovacuum alone keeps it clean');
    }
  }
}

/**
 * Runs a VACUUM or ANALYZE (SKIP_LOCKED) under a client-side time limit; false when the server
 * skipped the table because another one held it (reported as a WARNING notice, "lock not available").
 */
async function runUnlessSkipped(c: pg.PoolClient, statement: pg.QueryConfig, timeoutMs: number): Promise<boolean> {
  let skipped = false;
  const onNotice = (n: { code?: string }) => (skipped ||= n.code === '55P03');
  c.on('notice', onNotice);
  try {
    await c.query({ ...statement, query_timeout: timeoutMs } as pg.QueryConfig);
  } finally {
    c.off('notice', onNotice);
  }
  return !skipped;
}
