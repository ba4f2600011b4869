// A clock for unit tests: time moves only when the test says so, and timers fire in order.
import { MAX_TIMER_MS, type Clock, type Timer } from '../../src/util/time.js';

interface Pending {
  at: number;
  fn: () => void;
  seq: number;
}

export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private timers = new Map<number, Pending>();
  /** Every delay a timer was asked for, as given to setTimeout (after the cap). */
  readonly delays: number[] = [];

  constructor(start = Date.UTC(2026, 11, 2)) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    // the same cap as the system clock: Node's timers take at most a 32-bit signed delay
    const delay = Math.min(Math.max(0, ms), MAX_TIMER_MS);
    this.delays.push(delay);
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + delay, fn, seq: id });
    return id as unknown as Timer;
  }

  clearTimeout(timer: Timer | undefined): void {
    if (timer !== undefined) this.timers.delete(timer as unknown as number);
  }

  get pending(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const next = [...this.timers.entries()].sort(([, a], [, b]) => a.at - b.at || a.seq - b.seq)[0];
      if (!next || next[1].at > end) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
}
