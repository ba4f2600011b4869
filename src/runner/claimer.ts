// One claim at a time for all of a worker's queues. Runners ask for a claim when they have free
// slots and work may be waiting; asks that arrive while a claim is under way are coalesced into
// one more, so a storm of wake-ups costs a flag, not a statement each. One statement serves every
// queue that wants jobs at that moment: a batch as large as the free slots costs the database
// less than several small ones.
import { errorSummary } from '../db/errors.js';
import type { Logger } from '../observe/logger.js';
import { backoffMs } from '../util/backoff.js';
import { systemClock, type Clock, type Timer } from '../util/time.js';
import type { ClaimDemand, ClaimedJob, ClaimResult } from './claim.js';

const CLAIM_RETRY = { baseMs: 100, maxMs: 10_000, jitter: 'full' } as const;

/**
 * What a claim asked one runner's queue for: `want` slots, at wake-up generation `generation`;
 * with `windowMs` leaving out priority-0 jobs due before that many ms ago (QueueRunner says when).
 */
export interface Ask {
  want: number;
  generation: number;
  windowMs?: number;
}

export interface ClaimTarget {
  readonly queue: string;
  /** What to claim for now, or undefined: no free slot, stopped, or the queue was found empty since the last wake-up. */
  ask(): Ask | undefined;
  /**
   * The jobs a claim brought for this queue, in order; `heldBack` when a queue limit gave fewer
   * than asked although more may be waiting: retry in `retryMs`, or (null) once a running job ends.
   */
  deliver(jobs: ClaimedJob[], ask: Ask, heldBack?: { retryMs: number | null }): void;
}

export interface ClaimerOptions {
  claim(demands: ClaimDemand[]): Promise<ClaimResult>;
  log: Logger;
  clock?: Clock;
  /** Runs fn on the next turn of the event loop (setImmediate; tests replace it). */
  nextTurn?: (fn: () => void) => void;
}

export class Claimer {
  private readonly targets: ClaimTarget[] = [];
  private claiming = false;
  private claimAgain = false;
  private claimSoon = false;
  private failures = 0;
  private retryTimer: Timer | undefined;
  private stopped = false;
  private readonly clock: Clock;
  private readonly nextTurn: (fn: () => void) => void;

  constructor(private readonly opts: ClaimerOptions) {
    this.clock = opts.clock ?? systemClock;
    this.nextTurn = opts.nextTurn ?? ((fn) => setImmediate(fn));
  }

  add(target: ClaimTarget): void {
    this.targets.push(target);
  }

  /** Claim now, or once more right after the claim under way. */
  request(): void {
    if (this.stopped) return;
    if (this.claiming) {
      this.claimAgain = true;
      return;
    }
    if (this.retryTimer) return;
    void this.claim();
  }

  /**
   * Claim on the next turn of the event loop, once the jobs that settle in this turn have freed
   * their slots too: one claim for all of them, instead of a claim for the first slot to free and
   * another for the rest (a split that, once made, would repeat batch after batch).
   */
  requestSoon(): void {
    if (this.claimSoon || this.stopped) return;
    this.claimSoon = true;
    this.nextTurn(() => {
      this.claimSoon = false;
      this.request();
    });
  }

  stop(): void {
    this.stopped = true;
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  private async claim(): Promise<void> {
    const asks: [ClaimTarget, Ask][] = [];
    for (const t of this.targets) {
      const ask = t.ask();
      if (ask) asks.push([t, ask]);
    }
    this.claimAgain = false;
    if (!asks.length) return;
    this.claiming = true;
    try {
      const { jobs, heldBack } = await this.opts.claim(asks.map(([t, a]) => ({ queue: t.queue, limit: a.want, ...(a.windowMs ? { windowMs: a.windowMs } : {}) })));
      this.failures = 0;
      for (const [target, ask] of asks) {
        const retryMs = heldBack.get(target.queue);
        target.deliver(asks.length === 1 ? jobs : jobs.filter((j) => j.queue === target.queue), ask, retryMs === undefined ? undefined : { retryMs });
      }
    } catch (err) {
      this.failures++;
      const delay = backoffMs(this.failures, CLAIM_RETRY);
      this.opts.log.warn({ err: errorSummary(err), retryInMs: Math.round(delay) }, 'claiming jobs failed; retrying');
      this.retryTimer = this.clock.setTimeout(() => {
        this.retryTimer = undefined;
        this.request();
      }, delay);
    } finally {
      this.claiming = false;
    }
    // woken during the claim, or slots still free in a queue not known to be empty
    if (this.claimAgain || this.targets.some((t) => t.ask())) this.requestSoon();
  }
}
