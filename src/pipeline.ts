// Wake-ups in, jobs run with mergeMap(N). The producer claims, in one statement, as many jobs as
// there are free slots and hands them to mergeMap, so mergeMap never buffers: it only ever
// receives a job for a slot that is free. Wake-ups are coalesced into one pending claim, so a
// storm of notifications costs a counter, not memory. A slot that frees claims again unless the
// last claim found the queues empty and nothing has woken the producer since. One claim at a
// time: a batch as large as the free slots costs the database less than several small ones.
import { Subject, Subscription, from, mergeMap, type Observable } from 'rxjs';
import type { Logger } from './log.js';
import { errorSummary } from './db/errors.js';
import type { ClaimedJob } from './jobs/claim.js';
import { backoffMs } from './util/backoff.js';

const CLAIM_RETRY = { baseMs: 100, maxMs: 10_000, jitter: 'full' } as const;

export interface PipelineOptions {
  concurrency: number;
  claim(limit: number): Promise<ClaimedJob[]>;
  run(job: ClaimedJob): Promise<void>;
  log: Logger;
}

export class Pipeline {
  private readonly jobs$ = new Subject<ClaimedJob>();
  private readonly subscription = new Subscription();
  /** Slots with no job claimed for them. */
  private free: number;
  /** Jobs whose handler mergeMap has started. */
  private active = 0;
  private wakeGeneration = 0;
  /** The wake generation at which a claim last came back short: the queues were empty then. */
  private drainedAt = -1;
  private claiming = false;
  private claimAgain = false;
  private claimSoon = false;
  private claimFailures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly opts: PipelineOptions) {
    this.free = opts.concurrency;
  }

  start(wakeups: Observable<unknown>): void {
    this.subscription.add(
      this.jobs$
        .pipe(
          mergeMap((job) => from(this.runInSlot(job)), this.opts.concurrency),
        )
        .subscribe(),
    );
    this.subscription.add(wakeups.subscribe(() => this.wake()));
    this.wake();
  }

  /** Something may be runnable: claim for the free slots (coalesced with any claim under way). */
  wake(): void {
    this.wakeGeneration++;
    this.requestClaim();
  }

  /** Stops claiming; running jobs go on. */
  stopClaiming(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
  }

  /** Resolves when no job is running (or claimed for a slot). */
  whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  close(): void {
    this.stopClaiming();
    this.subscription.unsubscribe();
  }

  /** Jobs claimed for a slot and not yet finished. */
  get inFlight(): number {
    return this.opts.concurrency - this.free;
  }

  /** Claimed jobs waiting inside mergeMap for a slot: 0 by construction. */
  get buffered(): number {
    return this.inFlight - this.active;
  }

  private async runInSlot(job: ClaimedJob): Promise<void> {
    this.active++;
    try {
      await this.opts.run(job);
    } catch (err) {
      this.opts.log.error({ err: errorSummary(err), jobId: job.id }, 'job runner failed');
    } finally {
      this.active--;
      this.free++;
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
      if (this.drainedAt !== this.wakeGeneration) this.requestClaimSoon();
    }
  }

  private requestClaim(): void {
    if (this.stopped) return;
    if (this.claiming) {
      this.claimAgain = true;
      return;
    }
    if (this.free === 0 || this.retryTimer) return;
    void this.claim();
  }

  /**
   * Claims on the next turn of the event loop, once the jobs that settle in this turn have freed
   * their slots too: one claim for all of them, instead of a claim for the first slot to free and
   * another for the rest (a split that, once made, would repeat batch after batch).
   */
  private requestClaimSoon(): void {
    if (this.claimSoon) return;
    this.claimSoon = true;
    setImmediate(() => {
      this.claimSoon = false;
      this.requestClaim();
    });
  }

  private async claim(): Promise<void> {
    this.claiming = true;
    this.claimAgain = false;
    try {
      const generation = this.wakeGeneration;
      const want = this.free;
      const jobs = await this.opts.claim(want);
      this.claimFailures = 0;
      if (jobs.length < want) this.drainedAt = generation;
      this.free -= jobs.length;
      for (const job of jobs) this.jobs$.next(job);
    } catch (err) {
      this.claimFailures++;
      const delay = backoffMs(this.claimFailures, CLAIM_RETRY);
      this.opts.log.warn({ err: errorSummary(err), retryInMs: Math.round(delay) }, 'claiming jobs failed; retrying');
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        this.requestClaim();
      }, delay);
    } finally {
      this.claiming = false;
    }
    // woken during the claim, or slots still free and the queues not known to be empty
    if (this.claimAgain || (this.free > 0 && this.drainedAt !== this.wakeGeneration)) this.requestClaimSoon();
  }
}

/**
 * Timers for delayed jobs: one timer for the earliest known run_at. Bounded: past `capacity`
 * the latest times are dropped and left to the safety poll. The database clock is estimated, so
 * a due time fires a little late and once more shortly after, in case the estimate was off and
 * the first claim came too early.
 */
export class DueTimes {
  private times: { at: number; recheck: boolean }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;

  constructor(
    private readonly onDue: () => void,
    private readonly capacity = 1024,
    private readonly marginMs = 5,
    private readonly recheckMs = 50,
  ) {}

  /**
   * A job becomes due at `at`, which the database judged to be in the future. `at` is in the
   * database's clock; `offsetMs` = database clock minus local clock.
   */
  add(at: Date, offsetMs: number): void {
    const local = at.getTime() - offsetMs + this.marginMs;
    const now = Date.now();
    if (local <= now) {
      // due already by our estimate of the database clock, which may be off: look again soon
      this.onDue();
      this.insert({ at: now + this.recheckMs, recheck: true });
      return;
    }
    this.insert({ at: local, recheck: false });
  }

  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
    this.times = [];
  }

  private insert(entry: { at: number; recheck: boolean }): void {
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
    clearTimeout(this.timer);
    this.timerAt = next.at;
    this.timer = setTimeout(() => this.fire(), Math.max(0, next.at - Date.now()));
  }

  private fire(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = Date.now();
    const due: { at: number; recheck: boolean }[] = [];
    while (this.times.length && this.times[0]!.at <= now) due.push(this.times.shift()!);
    this.onDue();
    for (const d of due) if (!d.recheck) this.insert({ at: d.at + this.recheckMs, recheck: true });
    this.arm();
  }
}
