// The database side of recurring jobs, on the worker's pool.
import type pg from 'pg';
import type { CronEntry } from '../config/cron.js';
import { withClient } from '../db/pool.js';
import type { Queries } from '../db/queries.js';
import type { CronStore } from './scheduler.js';

export function cronStore(pool: pg.Pool, queries: Queries): CronStore {
  return {
    async enqueue(entry: CronEntry, tick: Date) {
      const res = await withClient(pool, (c) =>
        queries.enqueue_cron.run(c, {
          name: entry.name,
          tick: tick.toISOString(),
          task: entry.task,
          payload: JSON.stringify(entry.payload ?? {}),
          queue: entry.queue ?? null,
          priority: entry.priority ?? null,
          maxAttempts: entry.maxAttempts ?? null,
        }),
      );
      const id = res.rows[0]?.id;
      return id === null || id === undefined ? null : String(id);
    },
    async lastTick(name: string) {
      const res = await withClient(pool, (c) => queries.cron_last_tick.run(c, { name }));
      return res.rows[0]?.tick ?? null;
    },
  };
}
