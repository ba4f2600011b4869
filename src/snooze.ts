// A handler's answer "not now": `return snooze(60_000)` puts the job back to queued, due in a
// minute, without spending an attempt. Recognised by a brand, not instanceof, like
// PermanentError: a task may import another copy of sluice than the worker runs.
const SNOOZE = Symbol.for('sluice.snooze');

/** Longest snooze: what a timestamp can hold comfortably and a person can mean (about 10 years). */
export const MAX_SNOOZE_MS = 10 * 365 * 24 * 3600 * 1000;

export interface Snooze {
  readonly [SNOOZE]: true;
  readonly ms: number;
}

/** Returned by a handler: run the job again in `ms` milliseconds; the attempt is not spent. */
export function snooze(ms: number): Snooze {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0 || ms > MAX_SNOOZE_MS) {
    throw new RangeError(`snooze(ms) takes a number of milliseconds from 0 to ${MAX_SNOOZE_MS}, got ${String(ms)}`);
  }
  return { [SNOOZE]: true, ms: Math.round(ms) };
}

export function isSnooze(value: unknown): value is Snooze {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[SNOOZE] === true;
}
