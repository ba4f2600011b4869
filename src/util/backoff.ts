// The one backoff formula: base doubled per attempt, capped, with jitter. Every retry loop in
// sluice (job retries, reconnects, claims, outcome writes, startup) draws its delay from here, so
// they differ only in their constants.

export interface BackoffPolicy {
  /** Delay of the first attempt (attempt 1), before jitter. */
  baseMs: number;
  /** Longest delay, before jitter. */
  maxMs: number;
  /**
   * `full`: anywhere from 0 to the delay (spreads a herd of clients best); `equal`: from half
   * the delay to all of it (never much shorter than asked for).
   */
  jitter: 'full' | 'equal';
}

/** The delay before retry number `attempt` (1 for the first retry). */
export function backoffMs(attempt: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(Math.max(attempt, 1) - 1, 40));
  return policy.jitter === 'full' ? random() * exp : exp / 2 + (random() * exp) / 2;
}

/** An interval with ±25% jitter, so that workers started together do not act in lockstep. */
export function jittered(everyMs: number, random: () => number = Math.random): number {
  return everyMs * (0.75 + random() / 2);
}
