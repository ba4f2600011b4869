// One queue's runner: its slots (mergeMap with concurrency N), the jobs it runs, and what must
// happen to them (cancel, loss, release at shutdown). It asks the claimer for exactly as many
// jobs as it has free slots, so mergeMap never buffers: it only ever receives a job for a slot
// that is free. A slot that frees asks again unless the last claim found the queue empty and
// nothing has woken the runner since. The slot frees when the handler has settled, while its
// outcome is still being written, so claiming overlaps writing; but never with more than
// `maxBacklog` outcomes waiting, so a slow database slows claiming instead of piling up jobs.
// A queue limit that holds a claim back (cluster-wide concurrency, key concurrency, rate) stops
// the asking until the limit may allow a start again: when the rate window frees a start, when the
// outcome of a job of this runner is written, or after `heldRetryMs` (a job ending on another
// worker tells no one).
// With `prefetch`, a claim also takes up to that many jobs ahead of the free slots: claimed (held
// under the worker's lease and fencing, like running jobs) but not started, each handed to mergeMap
// only when a slot frees, so mergeMap still never buffers. Fewer, larger claims; the prefetched
// jobs are released at shutdown. Never for a queue with limits: they would count as running.
// The next claim is asked for as soon as the jobs held ahead are down to half, not on the next
// turn: short jobs run by the hundred in one turn, and would otherwise run out before it.
// A claim from a queue last found short (at start, after it ran dry) takes only the free slots:
// the first jobs of a burst then wait for a claim of their size, not one of hundreds of rows, and
// the jobs ahead come with the next claim.
// With `claimWindowMs`, a runner that has caught up leaves out of its claims the priority-0 jobs
// due before that window: a claim then starts at the window's edge of the index, not at its head,
// where a held xmin keeps the dead entry of every job claimed since it began. What such a claim
// cannot see is a job that became visible long after it was due (a late commit, a run_at in the
// past, a job put back): once per window `jobsBeforeWindow` looks for one, on its own borrow so
// that claims go on meanwhile, and if there is one the next claim takes the whole queue. So does
// a whole-queue claim that came back full with a job due for half a window (a backlog that may
// reach past the window), and a wake-up that may be about old jobs (a reconnect, settings
// changed). A backlog of recent jobs keeps the window: falling back to whole-queue claims there,
// each slower than the last under a held xmin, is how a runner that fell behind stayed behind.
import { Subject, Subscription, from, mergeMap } from 'rxjs';
import { errorSummary } from '../db/errors.js';
import type { AbortCause } from '../errors.js';
import type { Logger } from '../observe/logger.js';
import { systemClock, type Clock, type Timer } from '../util/time.js';
import type { ClaimedJob } from './claim.js';
import type { Ask, Claimer, ClaimTarget } from './claimer.js';
import { RunningJob } from './running-job.js';

export interface QueueRunnerOptions {
  queue: string;
  concurrency: number;
  claimer: Claimer;
  /** Runs the job's handler; resolves when it has settled, `written` when its outcome is stored. */
  execute(running: RunningJob): Promise<{ written: Promise<void> }>;
  /** Outcomes not yet written, across the worker. */
  backlog(): number;
  maxBacklog: number;
  /** How soon to ask again after a concurrency limit held a claim back. */
  heldRetryMs: number;
  /** Jobs to claim ahead of the free slots (0: none). */
  prefetch?: number;
  /** False while the queue has limits or a pause: then nothing is claimed ahead. */
  mayPrefetch?: () => boolean;
  /** Claims after the runner caught up leave out priority-0 jobs due before this many ms ago (0: no window). */
  claimWindowMs?: number;
  /** Whether a priority-0 job due before the window waits (asked once per window while claims have one). */
  jobsBeforeWindow?: (windowMs: number) => Promise<boolean>;
  /** Told when the runner starts to wait for a wake-up and when it looks by itself again (the queue's wake lock). */
  wakeLock?: { waiting(found: boolean): void; looking(): void };
  log: Logger;
  clock?: Clock;
}

export class QueueRunner implements ClaimTarget {
  readonly queue: string;
  /** Jobs this runner holds: running, or settled with the outcome still being written. */
  readonly running = new Map<string, RunningJob>();
  private readonly jobs$ = new Subject<ClaimedJob>();
  private readonly subscription = new Subscription();
  /** Slots with no job claimed for them. */
  private free: number;
  /** Jobs claimed ahead of the free slots, in claim order: held, not started. */
  readonly prefetched: ClaimedJob[] = [];
  /** Jobs whose handler mergeMap has started. */
  private active = 0;
  private wakeGeneration = 0;
  /** The wake generation at which a claim last came back short: the queue was empty then. */
  private drainedAt = -1;
  /** The last claim brought all it asked for: the queue may hold more (until then, claims ask for the free slots alone). */
  private lastClaimFull = false;
  private started = false;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  /** A hand-over of held jobs to freed slots is due on the next turn. */
  private startScheduled = false;
  /** Set while a queue limit holds claims back: the retry that will ask again. */
  private heldTimer: Timer | undefined;
  /** Held by a rate limit: a job ending here frees nothing, only time does. */
  private heldByRate = false;
  /** Outcomes of this runner's jobs written so far, and that count when the last claim was asked for. */
  private outcomesWritten = 0;
  private outcomesWrittenAtAsk = 0;
  /** The next claim takes the whole queue, not only the claim window (see the top of this file). */
  private fullClaimDue = true;
  /** Whole-queue wake-ups so far, and their count when the full claim under way was asked for. */
  private wakes = 0;
  private wakesAtFullClaim = 0;
  /** The next look for jobs before the window. */
  private windowTimer: Timer | undefined;
  private readonly clock: Clock;

  constructor(private readonly opts: QueueRunnerOptions) {
    this.queue = opts.queue;
    this.free = opts.concurrency;
    this.clock = opts.clock ?? systemClock;
    opts.claimer.add(this);
  }

  start(): void {
    this.started = true;
    this.subscription.add(this.jobs$.pipe(mergeMap((job) => from(this.runInSlot(job)), this.opts.concurrency)).subscribe());
    this.wake();
  }

  /** Something may be runnable in this queue: claim for the free slots. */
  wake(wholeQueue = false): void {
    if (wholeQueue) this.wantWholeQueue();
    this.opts.wakeLock?.looking();
    this.lookAgain();
  }

  /** Claim for the free slots, still waiting to be woken (the wake lock was just taken). */
  lookAgain(): void {
    this.wakeGeneration++;
    this.opts.claimer.request();
  }

  ask(): Ask | undefined {
    if (!this.started || this.stopped || this.heldTimer || this.drainedAt === this.wakeGeneration) return undefined;
    const ahead = this.ahead;
    // a slot without a job to hand it, or the jobs held ahead down to half: one claim for both
    const short = this.free > this.prefetched.length || (ahead > 0 && this.prefetched.length <= ahead / 2);
    // coming from an empty queue, nothing held: the free slots alone first, so that the first jobs
    // wait for a claim of their size and not of the jobs ahead; those follow once they are handed over
    const cold = !this.lastClaimFull && this.prefetched.length === 0;
    const want = cold ? this.free : this.free + ahead - this.prefetched.length;
    if (!short || want <= 0) return undefined;
    this.outcomesWrittenAtAsk = this.outcomesWritten;
    const windowMs = this.opts.claimWindowMs ?? 0;
    if (windowMs > 0 && !this.fullClaimDue) return { want, generation: this.wakeGeneration, windowMs };
    this.wakesAtFullClaim = this.wakes;
    return { want, generation: this.wakeGeneration };
  }

  deliver(jobs: ClaimedJob[], ask: Ask, heldBack?: { retryMs: number | null }): void {
    if (ask.windowMs === undefined && (this.opts.claimWindowMs ?? 0) > 0) {
      // came back full with a job that has waited half a window: the queue may hold older ones still,
      // which a window would leave out; a wake-up during the claim may be about a job its snapshot
      // did not see
      const behind = jobs.length >= ask.want && jobs.some((j) => j.priority === 0 && (j.dueMs ?? 0) >= this.opts.claimWindowMs! / 2);
      this.fullClaimDue = behind || this.wakes !== this.wakesAtFullClaim;
      if (!this.fullClaimDue) this.lookBeforeWindowLater();
    }
    // a concurrency limit counted jobs whose outcomes were written meanwhile: ask again at once
    if (heldBack && heldBack.retryMs === null && this.outcomesWritten !== this.outcomesWrittenAtAsk) this.opts.claimer.requestSoon();
    else if (heldBack) this.holdBack(heldBack.retryMs);
    else if (jobs.length < ask.want) this.drainedAt = ask.generation;
    if (!heldBack) this.lastClaimFull = jobs.length >= ask.want;
    // waiting for a wake-up only when nothing woke it during the claim (else it claims again)
    if (!heldBack && jobs.length < ask.want) {
      if (ask.generation === this.wakeGeneration) this.opts.wakeLock?.waiting(jobs.length > 0);
    } else this.opts.wakeLock?.looking();
    this.prefetched.push(...jobs);
    this.startPrefetched();
  }

  /**
   * Hands held jobs to free slots, oldest claim first (none once stopping: they are released).
   * When that takes the jobs held ahead down to half, the next claim is asked for at once: a
   * claim asked on the next turn, as a freed slot asks, may come after hundreds of short jobs
   * have run in this one, and the slots would wait for it with nothing to run.
   */
  private startPrefetched(): void {
    while (!this.stopped && this.free > 0 && this.prefetched.length) {
      this.free--;
      this.jobs$.next(this.prefetched.shift()!);
    }
    const ahead = this.ahead;
    if (ahead > 0 && this.prefetched.length <= ahead / 2) this.opts.claimer.request();
  }

  /**
   * On the next turn, once for all the slots that free in this one: handed over now, a job would
   * wait in mergeMap for the end of the slot that frees.
   */
  private startPrefetchedSoon(): void {
    if (this.startScheduled) return;
    this.startScheduled = true;
    setImmediate(() => {
      this.startScheduled = false;
      this.startPrefetched();
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
    });
  }

  /** How many jobs to hold ahead of the free slots now (0: none). */
  private get ahead(): number {
    return (this.opts.prefetch ?? 0) > 0 && (this.opts.mayPrefetch?.() ?? true) ? this.opts.prefetch! : 0;
  }

  /** Takes back the jobs held ahead (shutdown): they go back to queued, their attempt not spent. */
  takePrefetched(): ClaimedJob[] {
    return this.prefetched.splice(0);
  }

  /** The queue's settings changed (limits raised, resumed): ask at once, whatever held it back; a resumed queue's jobs may be old. */
  settingsChanged(): void {
    this.endHold();
    this.wake(true);
  }

  /** Stops claiming; running jobs go on. */
  stopClaiming(): void {
    this.stopped = true;
    this.clock.clearTimeout(this.windowTimer);
    this.windowTimer = undefined;
    this.opts.wakeLock?.looking();
  }

  /** Resolves when no job is running (or claimed for a slot). */
  whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  close(): void {
    this.stopClaiming();
    this.endHold();
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

  /** Aborts the job if this runner runs it; a job held ahead is dropped (it never started). */
  abort(id: string, cause: AbortCause, message: string): void {
    const i = this.prefetched.findIndex((j) => j.id === id);
    if (i >= 0) this.prefetched.splice(i, 1);
    this.running.get(id)?.abort(cause, message);
  }

  /** The next claim takes the whole queue. */
  private wantWholeQueue(): void {
    this.wakes++;
    this.fullClaimDue = true;
  }

  /** Once per window while claims have one: is a job waiting that they cannot see? Then claim the whole queue. */
  private lookBeforeWindowLater(): void {
    const windowMs = this.opts.claimWindowMs ?? 0;
    if (this.windowTimer || this.stopped || !this.opts.jobsBeforeWindow || windowMs <= 0) return;
    this.windowTimer = this.clock.setTimeout(async () => {
      let waiting: boolean;
      try {
        waiting = await this.opts.jobsBeforeWindow!(windowMs);
      } catch (err) {
        this.opts.log.debug({ err: errorSummary(err), queue: this.queue }, 'looking for jobs before the claim window failed; claiming the whole queue');
        waiting = true;
      }
      this.windowTimer = undefined;
      if (this.stopped) return;
      if (waiting) {
        this.wantWholeQueue();
        this.lookAgain();
      } else if (!this.fullClaimDue) this.lookBeforeWindowLater();
    }, windowMs);
  }

  private holdBack(retryMs: number | null): void {
    this.endHold();
    this.heldByRate = retryMs !== null;
    this.heldTimer = this.clock.setTimeout(() => {
      this.heldTimer = undefined;
      this.opts.claimer.request();
    }, Math.max(1, Math.ceil(retryMs ?? this.opts.heldRetryMs)));
  }

  private endHold(): void {
    if (!this.heldTimer) return;
    this.clock.clearTimeout(this.heldTimer);
    this.heldTimer = undefined;
  }

  private async runInSlot(job: ClaimedJob): Promise<void> {
    this.active++;
    const running = new RunningJob(job);
    this.running.set(job.id, running);
    try {
      const { written } = await this.opts.execute(running);
      running.handlerDone = true;
      const whenWritten = () => {
        this.running.delete(job.id);
        this.outcomesWritten++;
        // the job no longer counts as running in the database: a concurrency limit that held
        // claims back may allow one now
        if (this.heldTimer && !this.heldByRate) {
          this.endHold();
          this.opts.claimer.requestSoon();
        }
      };
      const done = written.then(whenWritten, (err) => {
        this.opts.log.error({ err: errorSummary(err), jobId: job.id }, 'writing the outcome failed');
        whenWritten();
      });
      if (this.opts.backlog() > this.opts.maxBacklog) await done;
    } catch (err) {
      this.running.delete(job.id);
      this.opts.log.error({ err: errorSummary(err), jobId: job.id }, 'job runner failed');
    } finally {
      this.active--;
      this.free++;
      if (this.prefetched.length) this.startPrefetchedSoon();
      else if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
      if (this.drainedAt !== this.wakeGeneration) this.opts.claimer.requestSoon();
    }
  }
}
