// What a failed attempt leaves behind: when the job runs again, and the error text kept on it.
import { backoffMs } from '../util/backoff.js';

export interface RetryPolicy {
  /** worker.retryBaseMs: backoff of the first retry. */
  baseMs: number;
  /** worker.retryMaxMs: longest backoff. */
  maxMs: number;
}

/** Half to all of base * 2^(attempt-1), at most max: attempt is the one that just failed. */
export function retryDelayMs(attempt: number, policy: RetryPolicy): number {
  return backoffMs(attempt, { baseMs: policy.baseMs, maxMs: policy.maxMs, jitter: 'equal' });
}

/** Longest error text kept per attempt (the job keeps the last 10). */
export const MAX_ERROR_CHARS = 8000;

/** A thrown value as the text stored on the job: the stack when there is one, at most MAX_ERROR_CHARS. */
export function describeError(err: unknown): string {
  let text: string;
  if (err instanceof Error) text = err.stack && err.stack.includes(err.message) ? err.stack : `${err.name}: ${err.message}\n${err.stack ?? ''}`;
  else {
    try {
      text = `non-Error thrown: ${JSON.stringify(err)}`;
    } catch {
      text = `non-Error thrown: ${String(err)}`;
    }
  }
  return text.length > MAX_ERROR_CHARS ? `${text.slice(0, MAX_ERROR_CHARS)}… [truncated ${text.length - MAX_ERROR_CHARS} chars]` : text;
}
