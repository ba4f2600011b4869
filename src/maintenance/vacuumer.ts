// Vacuums the jobs table when dead row versions pile up. Every claim and completion leaves one,
// and a claim walks past the dead entries at the head of the runnable index until VACUUM
// removes them, so under sustained load claiming slows down several times over while the table
// waits for autovacuum (measured: 12,000 -> 2,400 jobs/s over two minutes in the long
// benchmark). One worker at a time (an advisory lock); it borrows one pool connection for as
// long as VACUUM runs. Retired when this role may not vacuum the table. Behind a transaction
// pooler a session lock, a session timeout and a backend pid mean nothing (the next statement
// may run on another server connection): there VACUUM (SKIP_LOCKED) stands in for the lock and
// the client-side time limit for the server's.
import type pg from 'pg';
import { withClient } from '../db/pool.js';
import type { Queries } from '../db/queries.js';
import type { Logger } from '../observe/logger.js';
import { PeriodicService } from './service.js';

export interface VacuumerOptions {
  pool: pg.Pool;
  queries: Queries;
  /** Vacuum once the table holds more dead row versions than this (0: never). */
  deadRows: number;
  checkEveryMs: number;
  /** Longest a VACUUM may run before it is cancelled. */
  timeoutMs: number;
  /** database.pooler=transaction: no session state (see the top of this file). */
  pooled?: boolean;
  log: Logger;
}

export type VacuumResult = 'vacuumed' | 'not needed' | 'busy' | 'not allowed';

export class Vacuumer extends PeriodicService {
  readonly name = 'vacuumer';
  protected readonly failureMessage = 'vacuuming the jobs table failed';
  /** The backend running VACUUM for us, so that stop() can cancel it. */
  private vacuumPid: number | undefined;

  constructor(private readonly opts: VacuumerOptions) {
    super({ everyMs: opts.checkEveryMs, log: opts.log });
  }

  protected override enabled(): boolean {
    return this.opts.deadRows > 0;
  }

  /** A VACUUM under way is cancelled rather than waited for. */
  protected override async interrupt(): Promise<void> {
    if (this.vacuumPid !== undefined) {
      await this.opts.queries.cancel_backend.run(this.opts.pool, { pid: this.vacuumPid }).catch(() => undefined);
    }
  }

  /** Vacuums the jobs table if it holds more dead rows than the threshold and no other worker is at it. */
  async vacuumIfNeeded(): Promise<VacuumResult> {
    const { pool, queries, deadRows, timeoutMs, pooled } = this.opts;
    return withClient(pool, async (c) => {
      const stats = (await queries.dead_rows.run(c, {})).rows[0]!;
      if (!stats.may_vacuum) return 'not allowed';
      if (Number(stats.dead) <= deadRows) return 'not needed';
      if (pooled) {
        // a skipped table is reported as a WARNING notice ("skipping vacuum of ... lock not available")
        let skipped = false;
        const onNotice = (n: { code?: string }) => (skipped ||= n.code === '55P03');
        c.on('notice', onNotice);
        try {
          await c.query({ ...queries.vacuum_jobs_skip_locked.config({}), query_timeout: timeoutMs } as pg.QueryConfig);
        } finally {
          c.off('notice', onNotice);
        }
        return skipped ? 'busy' : 'vacuumed';
      }
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
    if (result === 'not allowed') {
      this.retire();
      this.opts.log.info('not vacuuming the jobs table: this role does not own it; autovacuum alone keeps it clean');
    }
  }
}
