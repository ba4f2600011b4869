// Which queues have limits or a pause, as last read from the database: their claims go through
// claim_controlled_jobs. Read at start, when a queue's settings change (notification) and at
// every safety poll. A stale answer costs no exactness: the plain claim refuses a controlled
// queue by itself; it only delays that queue's next claim until the next read.
import type pg from 'pg';
import { errorSummary } from '../db/errors.js';
import { withClient } from '../db/pool.js';
import type { Queries } from '../db/queries.js';
import type { Logger } from '../observe/logger.js';

export class ControlledQueues {
  private names: ReadonlySet<string> = new Set();
  private failing = false;

  constructor(private readonly opts: { pool: pg.Pool; queries: Queries; log: Logger }) {}

  get current(): ReadonlySet<string> {
    return this.names;
  }

  /** Reads the set again; returns the queues that became or stopped being controlled. */
  async refresh(): Promise<string[]> {
    try {
      const res = await withClient(this.opts.pool, (c) => this.opts.queries.controlled_queues.run(c, {}));
      const next = new Set(res.rows.map((r) => r.name));
      const changed = [...next].filter((q) => !this.names.has(q)).concat([...this.names].filter((q) => !next.has(q)));
      this.names = next;
      if (this.failing) this.opts.log.info('queue settings read again');
      this.failing = false;
      return changed;
    } catch (err) {
      if (!this.failing) this.opts.log.warn({ err: errorSummary(err) }, 'could not read queue settings; using the last ones read');
      this.failing = true;
      return [];
    }
  }
}
