// `sluice cron list`: the recurring jobs of the configuration, with their next tick (from the
// schedule) and their last recorded tick and its job (from the database).
import type { CronEntry } from '../config/cron.js';
import { cronOf } from '../cron/scheduler.js';
import { loadQueries } from '../db/queries.js';
import type { Queryable } from '../db/statement.js';

export interface CronSummary {
  name: string;
  schedule: string;
  timezone: string;
  task: string;
  queue: string;
  backfill: number;
  nextTick: string | null;
  lastTick: string | null;
  lastJobId: string | null;
  /** Status of the last tick's job; null when there is none or it was pruned. */
  lastJobStatus: string | null;
}

export async function listCron(db: Queryable, schema: string, entries: CronEntry[], now = new Date()): Promise<CronSummary[]> {
  if (!entries.length) return [];
  const res = await loadQueries(schema).cron_ticks.run(db, { names: entries.map((e) => e.name) });
  const last = new Map(res.rows.map((r) => [r.name, r]));
  return entries.map((e) => {
    const l = last.get(e.name);
    return {
      name: e.name,
      schedule: e.schedule,
      timezone: e.timezone ?? 'UTC',
      task: e.task,
      queue: e.queue ?? 'default',
      backfill: e.backfill ?? 0,
      nextTick: cronOf(e).nextRun(now)?.toISOString() ?? null,
      lastTick: l ? l.tick.toISOString() : null,
      lastJobId: l?.job_id === null || l?.job_id === undefined ? null : String(l.job_id),
      lastJobStatus: l?.status ?? null,
    };
  });
}
