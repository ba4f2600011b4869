// One queue's runner: its slots (mergeMap with concurrency N), the jobs it runs, and what must
// happen to them (cancel, loss, release at shutdown). It asks the claimer for exactly as many
// jobs as it has free slots, so mergeMap never buffers: it only ever receives a job for a slot
// that is free. A slot that frees asks again unless the last claim found the queue empty and
// nothing has woken the runner since. The slot frees when the handler has settled, while its
// outcome is still being written, so claiming overlaps writing; but never with more than
// `maxBacklog` outcomes waiting, so a slow database slows claiming instead of piling up jobs.
import { Subject, Subscription, from, mergeMap } from 'rxjs';
import { errorSummary } from '../db/errors.js';
import type { AbortCause } from '../errors.js';
import type { Logger } from '../observe/logger.js';
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
  log: Logger;
}

export class QueueRunner implements ClaimTarget {
  readonly queue: string;
  /** Jobs this runner holds: running, or settled with the outcome still being written. */
  readonly running = new Map<string, RunningJob>();
  private readonly jobs$ = new Subject<ClaimedJob>();
  private readonly subscription = new Subscription();
  /** Slots with no job claimed for them. */
  private free: number;
  /** Jobs whose handler mergeMap has started. */
  private active = 0;
  private wakeGeneration = 0;
  /** The wake generation at which a claim last came back short: the queue was empty then. */
  private drainedAt = -1;
  private started = false;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly opts: QueueRunnerOptions) {
    this.queue = opts.queue;
    this.free = opts.concurrency;
    opts.claimer.add(this);
  }

  start(): void {
    this.started = true;
    this.subscription.add(this.jobs$.pipe(mergeMap((job) => from(this.runInSlot(job)), this.opts.concurrency)).subscribe());
    this.wake();
  }

  /** Something may be runnable in this queue: claim for the free slots. */
  wake(): void {
    this.wakeGeneration++;
    this.opts.claimer.request();
  }

  ask(): Ask | undefined {
    if (!this.started || this.stopped || this.free === 0 || this.drainedAt === this.wakeGeneration) return undefined;
    return { want: this.free, generation: this.wakeGeneration };
  }

  deliver(jobs: ClaimedJob[], ask: Ask): void {
    if (jobs.length < ask.want) this.drainedAt = ask.generation;
    this.free -= jobs.length;
    for (const job of jobs) this.jobs$.next(job);
  }

  /** Stops claiming; running jobs go on. */
  stopClaiming(): void {
    this.stopped = true;
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

  /** Aborts the job if this runner runs it. */
  abort(id: string, cause: AbortCause, message: string): void {
    this.running.get(id)?.abort(cause, message);
  }

  private async runInSlot(job: ClaimedJob): Promise<void> {
    this.active++;
    const running = new RunningJob(job);
    this.running.set(job.id, running);
    try {
      const { written } = await this.opts.execute(running);
      running.handlerDone = true;
      const done = written
        .catch((err) => this.opts.log.error({ err: errorSummary(err), jobId: job.id }, 'writing the outcome failed'))
        .finally(() => this.running.delete(job.id));
      if (this.opts.backlog() > this.opts.maxBacklog) await done;
    } catch (err) {
      this.running.delete(job.id);
      this.opts.log.error({ err: errorSummary(err), jobId: job.id }, 'job runner failed');
    } finally {
      this.active--;
      this.free++;
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
      if (this.drainedAt !== this.wakeGeneration) this.opts.claimer.requestSoon();
    }
  }
}
