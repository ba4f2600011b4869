// Recurring jobs: each worker with a `cron` section schedules every entry, and each tick is
// enqueued at most once across all of them: enqueue_cron records (name, tick) for good, and
// only the first worker to record a tick enqueues its job. Times are the database's (the lease
// measures the offset), so workers whose clocks differ still agree on which tick is due; a timer
// that fires early is simply re-armed.
// After a restart, up to `backfill` ticks missed while no worker of this one ran are enqueued;
// ticks missed while this worker ran (a stalled event loop, a database outage) are always
// caught up, up to MAX_CATCH_UP.
import { Cron } from 'croner';
import type { CronEntry } from '../config/cron.js';
import { errorSummary } from '../db/errors.js';
import type { Service } from '../maintenance/service.js';
import type { Logger } from '../observe/logger.js';
import { backoffMs } from '../util/backoff.js';
import { systemClock, type Clock, type Timer } from '../util/time.js';

const MAX_CATCH_UP = 100;
const RETRY = { baseMs: 500, maxMs: 30_000, jitter: 'full' } as const;

export interface CronStore {
  /** Records the tick and enqueues its job; the job's id, or null when the tick was recorded before. */
  enqueue(entry: CronEntry, tick: Date): Promise<string | null>;
  /** The latest tick recorded for `name`, by any worker. */
  lastTick(name: string): Promise<Date | null>;
}

export interface CronSchedulerOptions {
  entries: CronEntry[];
  store: CronStore;
  /** Database clock minus local clock. */
  clockOffsetMs(): number;
  log: Logger;
  clock?: Clock;
}

/** The ticks of `entry` after `after`, up to and including `until`, oldest first; at most `max` (the latest ones). */
export function ticksBetween(cron: Cron, after: Date, until: Date, max: number): Date[] {
  if (max <= 0) return [];
  const out: Date[] = [];
  for (const t of cron.previousRuns(max, new Date(until.getTime() + 1))) if (t.getTime() > after.getTime()) out.push(t);
  return out.sort((a, b) => a.getTime() - b.getTime());
}

export function cronOf(entry: CronEntry): Cron {
  return new Cron(entry.schedule, { timezone: entry.timezone ?? 'UTC', paused: true });
}

class EntrySchedule {
  readonly cron: Cron;
  /** Ticks up to here are handled (enqueued here, or found recorded). */
  cursor = 0;
  timer: Timer | undefined;
  failures = 0;

  constructor(readonly entry: CronEntry) {
    this.cron = cronOf(entry);
  }
}

export class CronScheduler implements Service {
  readonly name = 'cron';
  private readonly schedules: EntrySchedule[];
  private readonly clock: Clock;
  private stopped = false;
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly opts: CronSchedulerOptions) {
    this.clock = opts.clock ?? systemClock;
    this.schedules = opts.entries.map((e) => new EntrySchedule(e));
  }

  start(): void {
    for (const s of this.schedules) this.track(this.begin(s));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const s of this.schedules) this.clock.clearTimeout(s.timer);
    await Promise.all([...this.running]);
  }

  private dbNow(): number {
    return this.clock.now() + this.opts.clockOffsetMs();
  }

  private track(p: Promise<void>): void {
    this.running.add(p);
    void p.finally(() => this.running.delete(p));
  }

  /** At start: the missed ticks backfill allows, then the schedule from now on. */
  private async begin(s: EntrySchedule): Promise<void> {
    const now = this.dbNow();
    const backfill = s.entry.backfill ?? 0;
    let missed: Date[] = [];
    if (backfill > 0) {
      try {
        const last = await this.opts.store.lastTick(s.entry.name);
        if (last) missed = ticksBetween(s.cron, last, new Date(now), backfill);
      } catch (err) {
        this.opts.log.warn({ err: errorSummary(err), cron: s.entry.name }, 'could not read the last tick of a recurring job; no backfill');
      }
    }
    s.cursor = missed.length ? missed[0]!.getTime() - 1 : now;
    if (missed.length) this.opts.log.info({ cron: s.entry.name, ticks: missed.map((t) => t.toISOString()) }, 'enqueueing missed ticks of a recurring job (backfill)');
    await this.fire(s, missed.length ? now : undefined);
  }

  /** Enqueues the ticks due up to `upTo` (default: now), then arms the timer for the next one. */
  private async fire(s: EntrySchedule, upTo?: number): Promise<void> {
    if (this.stopped) return;
    const now = upTo ?? this.dbNow();
    const due = ticksBetween(s.cron, new Date(s.cursor), new Date(now), MAX_CATCH_UP);
    try {
      for (const tick of due) {
        const id = await this.opts.store.enqueue(s.entry, tick);
        s.cursor = tick.getTime();
        if (id) this.opts.log.debug({ cron: s.entry.name, tick: tick.toISOString(), jobId: id }, 'recurring job enqueued');
      }
      s.cursor = Math.max(s.cursor, now);
      if (s.failures) this.opts.log.info({ cron: s.entry.name }, 'recurring job enqueues again');
      s.failures = 0;
    } catch (err) {
      s.failures++;
      const delay = backoffMs(s.failures, RETRY);
      if (s.failures === 1) this.opts.log.warn({ err: errorSummary(err), cron: s.entry.name, retryInMs: Math.round(delay) }, 'could not enqueue a recurring job; retrying');
      this.arm(s, delay);
      return;
    }
    const next = s.cron.nextRun(new Date(s.cursor));
    if (next) this.arm(s, next.getTime() - this.dbNow());
  }

  private arm(s: EntrySchedule, delayMs: number): void {
    if (this.stopped) return;
    this.clock.clearTimeout(s.timer);
    // the clock's cap keeps a far tick (a yearly schedule) from overflowing the timer; firing
    // early only re-arms
    s.timer = this.clock.setTimeout(() => {
      s.timer = undefined;
      this.track(this.fire(s));
    }, Math.max(0, delayMs));
  }
}
