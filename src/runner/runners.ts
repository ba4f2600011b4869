// The worker's queue runners as one: wake-ups routed by queue, the jobs they hold (for the lease),
// aborts routed to the runner that runs the job, and the release of unfinished jobs at shutdown.
import type pg from 'pg';
import { errorSummary } from '../db/errors.js';
import { withClient } from '../db/pool.js';
import type { Queries } from '../db/queries.js';
import type { AbortCause } from '../errors.js';
import type { Logger } from '../observe/logger.js';
import type { QueueRunner } from './queue-runner.js';
import type { RunningJob } from './running-job.js';

export class Runners {
  private readonly byQueue: Map<string, QueueRunner>;

  constructor(
    readonly list: QueueRunner[],
    private readonly release: { pool: pg.Pool; queries: Queries; log: Logger },
  ) {
    this.byQueue = new Map(list.map((r) => [r.queue, r]));
  }

  start(): void {
    for (const r of this.list) r.start();
  }

  /** Jobs may be runnable in `queue` (ignored when this worker does not take it). */
  wake(queue: string): void {
    this.byQueue.get(queue)?.wake();
  }

  /** Claims for `queue` once more without counting as a wake-up (see QueueRunner.lookAgain). */
  lookAgain(queue: string): void {
    this.byQueue.get(queue)?.lookAgain();
  }

  /** `wholeQueue`: the jobs may be old (a reconnect), so claims look past the claim window. */
  wakeAll(wholeQueue = false): void {
    for (const r of this.list) r.wake(wholeQueue);
  }

  /** `queue`'s limits or pause changed: its runner asks at once, whatever held it back. */
  settingsChanged(queue: string): void {
    this.byQueue.get(queue)?.settingsChanged();
  }

  has(queue: string): boolean {
    return this.byQueue.has(queue);
  }

  /** Jobs held and not aborted, running or claimed ahead: what the lease vouches for. */
  held(): { ids: string[]; tokens: string[] } {
    const ids: string[] = [];
    const tokens: string[] = [];
    for (const r of this.list) {
      for (const running of r.running.values()) {
        if (running.abortedBy) continue;
        ids.push(running.job.id);
        tokens.push(running.job.token);
      }
      for (const job of r.prefetched) {
        ids.push(job.id);
        tokens.push(job.token);
      }
    }
    return { ids, tokens };
  }

  /** Jobs claimed ahead of free slots, not started. */
  get prefetched(): number {
    return this.list.reduce((n, r) => n + r.prefetched.length, 0);
  }

  /** Puts the jobs claimed ahead back to queued, their attempt not spent (at shutdown: they never started). */
  async releasePrefetched(): Promise<void> {
    const jobs = this.list.flatMap((r) => r.takePrefetched());
    if (!jobs.length) return;
    const { pool, queries, log } = this.release;
    try {
      await withClient(pool, (c) => queries.release_jobs.run(c, { ids: jobs.map((j) => j.id), tokens: jobs.map((j) => j.token) }));
      log.info({ jobs: jobs.length }, 'jobs claimed ahead put back to queued without spending an attempt');
    } catch (err) {
      log.warn({ err: errorSummary(err), jobs: jobs.length }, 'could not put the jobs claimed ahead back; rescue will requeue them');
    }
  }

  abort(id: string, cause: AbortCause, message: string): void {
    for (const r of this.list) r.abort(id, cause, message);
  }

  /** Jobs held now, finished or not. */
  get holding(): number {
    return this.list.reduce((n, r) => n + r.running.size, 0);
  }

  holdingIds(): string[] {
    return this.list.flatMap((r) => [...r.running.keys()]);
  }

  get inFlight(): number {
    return this.list.reduce((n, r) => n + r.inFlight, 0);
  }

  get buffered(): number {
    return this.list.reduce((n, r) => n + r.buffered, 0);
  }

  stopClaiming(): void {
    for (const r of this.list) r.stopClaiming();
  }

  whenIdle(): Promise<void> {
    return Promise.all(this.list.map((r) => r.whenIdle())).then(() => undefined);
  }

  close(): void {
    for (const r of this.list) r.close();
  }

  /**
   * Aborts every handler still running and puts its job back to queued without spending an
   * attempt (graceful shutdown past the grace period).
   */
  async abortAndRelease(): Promise<void> {
    const left: RunningJob[] = this.list.flatMap((r) => [...r.running.values()].filter((j) => !j.abortedBy && !j.handlerDone));
    if (!left.length) return;
    for (const j of left) j.abort('shutdown', 'the worker is shutting down');
    const { pool, queries, log } = this.release;
    try {
      const res = await withClient(pool, (c) => queries.release_jobs.run(c, { ids: left.map((j) => j.job.id), tokens: left.map((j) => j.job.token) }));
      log.info({ jobs: res.rows.map((r) => String(r.id)) }, 'unfinished jobs put back to queued without spending an attempt');
    } catch (err) {
      log.warn({ err: errorSummary(err) }, 'could not put unfinished jobs back; rescue will requeue them');
    }
  }
}
