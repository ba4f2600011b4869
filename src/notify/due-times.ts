// Timers for delayed jobs: one timer for the earliest known run_at. Bounded: past `capacity`
// the latest times are dropped and left to the safety poll. The database clock is estimated, so
// a due time fires a little late and once more shortly after, in case the estimate was off and
// the first claim came too early. The timer itself never waits longer than a timer can (about
// 24.8 days): a run_at further out fires a harmless early look, then waits again.
import { systemClock, type Clock, type Timer } from '../util/time.js';

interface DueTime {
  at: number;
  recheck: boolean;
}

export interface DueTimesOptions {
  capacity?: number;
  /** Fire this long after the estimated due time. */
  marginMs?: number;
  /** The second look after a due time. */
  recheckMs?: number;
  clock?: Clock;
}

export class DueTimes {
  private times: DueTime[] = [];
  private timer: Timer | undefined;
  private timerAt = Infinity;
  private readonly capacity: number;
  private readonly marginMs: number;
  private readonly recheckMs: number;
  private readonly clock: Clock;

  constructor(private readonly onDue: () => void, opts: DueTimesOptions = {}) {
    this.capacity = opts.capacity ?? 1024;
    this.marginMs = opts.marginMs ?? 5;
    this.recheckMs = opts.recheckMs ?? 50;
    this.clock = opts.clock ?? systemClock;
  }

  /** How many due times are waiting. */
  get size(): number {
    return this.times.length;
  }

  /**
   * A job becomes due at `at`, which the database judged to be in the future. `at` is in the
   * database's clock; `offsetMs` = database clock minus local clock.
   */
  add(at: Date, offsetMs: number): void {
    const local = at.getTime() - offsetMs + this.marginMs;
    if (!Number.isFinite(local)) return;
    const now = this.clock.now();
    if (local <= now) {
      // due already by our estimate of the database clock, which may be off: look again soon
      this.onDue();
      this.insert({ at: now + this.recheckMs, recheck: true });
      return;
    }
    this.insert({ at: local, recheck: false });
  }

  clear(): void {
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
    this.times = [];
  }

  private insert(entry: DueTime): void {
    let lo = 0;
    let hi = this.times.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.times[mid]!.at < entry.at) lo = mid + 1;
      else hi = mid;
    }
    if (this.times[lo]?.at === entry.at) return;
    this.times.splice(lo, 0, entry);
    if (this.times.length > this.capacity) this.times.pop();
    this.arm();
  }

  private arm(): void {
    const next = this.times[0];
    if (next === undefined || next.at >= this.timerAt) return;
    this.clock.clearTimeout(this.timer);
    this.timerAt = next.at;
    this.timer = this.clock.setTimeout(() => this.fire(), next.at - this.clock.now());
  }

  private fire(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = this.clock.now();
    const due: DueTime[] = [];
    while (this.times.length && this.times[0]!.at <= now) due.push(this.times.shift()!);
    if (due.length) this.onDue();
    for (const d of due) if (!d.recheck) this.insert({ at: d.at + this.recheckMs, recheck: true });
    this.arm();
  }
}
