// The worker's half of coalesced notifications (docs/notifications.md tells the whole protocol).
// An insert notifies only when it cannot take its queue's wake lock in shared mode, that is while
// a runner holds it: a runner holds it while it waits for work (its last claim came back short),
// and gives it back when it is woken, so that the producers of a busy queue commit without the
// NOTIFY lock. The lock lives on the LISTEN connection: the connection bound stays pool.max + 1,
// and a lock cannot outlive the LISTEN it stands for.
// A producer that took the lock shared holds it until its transaction ends, so a runner cannot
// start to wait before that job is committed (or rolled back): on taking the lock, the runner
// claims once more. While producers hold it, their jobs may be committed already (under a steady
// load some producer holds the lock nearly all the time): the runner claims again at once after a
// claim that found jobs, else after a short delay that grows with how long its claims have found
// nothing. While another worker's runner holds it, producers notify, and only the lock is tried
// again, rarely.
import { errorSummary } from '../db/errors.js';
import type { Queryable } from '../db/statement.js';
import type { Logger } from '../observe/logger.js';
import { backoffMs } from '../util/backoff.js';
import { systemClock, type Clock, type Timer } from '../util/time.js';

export type WakeLockState = 'held' | 'producers' | 'worker';

/** The LISTEN connection, as long as it lasts; `id` changes with every new connection. */
export interface ListenerSession {
  id: number;
  db: Queryable;
}

export interface WakeLocksOptions {
  /** The current LISTEN connection, or undefined while there is none. */
  session(): ListenerSession | undefined;
  take(db: Queryable, queue: string): Promise<WakeLockState>;
  release(db: Queryable, queue: string): Promise<void>;
  /** Claims for the queue once more, without giving the lock back. */
  lookAgain(queue: string): void;
  log: Logger;
  clock?: Clock;
}

/** While producers hold the lock and claims find nothing: claim again after elapsed/64 (2 s of nothing: 31 ms), 1 ms to 1 s. */
const PRODUCERS_RETRY = { minMs: 1, maxMs: 1000, fraction: 1 / 64 };
/** While another worker holds it, or the statement failed: try the lock again. */
const WORKER_RETRY = { baseMs: 50, maxMs: 1000, jitter: 'equal' } as const;

/** One queue's lock, as the runner wants it and as it is. */
class QueueLock {
  /** The runner waits for work: producers must notify. */
  wanted = false;
  /** The session that holds the lock, if one does. */
  heldBy: number | undefined;
  /** A statement about this lock is under way. */
  busy = false;
  retry: Timer | undefined;
  /** Since when producers have held it while claims found nothing; undefined until met again (after jobs found, a wake-up, the lock had). */
  producersSince: number | undefined;
  failures = 0;
}

export class WakeLocks {
  private readonly locks = new Map<string, QueueLock>();
  private readonly clock: Clock;
  private stopped = false;

  constructor(private readonly opts: WakeLocksOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  /** The runner found `queue` empty (`found`: after taking some jobs) and waits to be woken. */
  waiting(queue: string, found = false): void {
    const lock = this.lock(queue);
    lock.wanted = true;
    if (found) lock.producersSince = undefined;
    this.settle(queue, lock);
  }

  /** The runner of `queue` looks for work by itself (woken, or its slots are full). */
  looking(queue: string): void {
    const lock = this.locks.get(queue);
    if (!lock?.wanted) return;
    lock.wanted = false;
    this.clock.clearTimeout(lock.retry);
    lock.retry = undefined;
    lock.producersSince = undefined;
    this.settle(queue, lock);
  }

  /** Held now by the current LISTEN connection (for status and tests). */
  holds(queue: string): boolean {
    const lock = this.locks.get(queue);
    return lock?.heldBy !== undefined && lock.heldBy === this.opts.session()?.id;
  }

  /** No more statements; the locks go with the LISTEN connection when it closes. */
  stop(): void {
    this.stopped = true;
    for (const lock of this.locks.values()) this.clock.clearTimeout(lock.retry);
  }

  private lock(queue: string): QueueLock {
    let lock = this.locks.get(queue);
    if (!lock) this.locks.set(queue, (lock = new QueueLock()));
    return lock;
  }

  /** Brings the lock to what the runner wants, one statement at a time. */
  private settle(queue: string, lock: QueueLock): void {
    if (lock.busy || this.stopped) return;
    const session = this.opts.session();
    // a lock held by a connection that is gone went with it
    if (lock.heldBy !== undefined && lock.heldBy !== session?.id) lock.heldBy = undefined;
    // no connection: on the next one every runner is woken and asks again
    if (!session) return;
    if (lock.wanted && lock.heldBy === undefined && !lock.retry) void this.take(queue, lock, session);
    else if (!lock.wanted && lock.heldBy !== undefined) void this.release(queue, lock, session);
  }

  private async take(queue: string, lock: QueueLock, session: ListenerSession): Promise<void> {
    lock.busy = true;
    let state: WakeLockState | undefined;
    try {
      state = await this.opts.take(session.db, queue);
    } catch (err) {
      this.opts.log.debug({ err: errorSummary(err), queue }, 'taking the wake lock failed; the listener checks its connection');
    } finally {
      lock.busy = false;
    }
    if (this.stopped) return;
    if (state === 'held') {
      lock.heldBy = session.id;
      lock.failures = 0;
      lock.producersSince = undefined;
      // jobs committed before the lock was had notified no one: look once more
      if (lock.wanted) this.opts.lookAgain(queue);
      else this.settle(queue, lock);
      return;
    }
    if (!lock.wanted) return;
    if (state === 'producers') {
      const now = this.clock.now();
      // the claim before found jobs, or these producers are the first met since the runner was
      // woken: more of their jobs may be committed already, and a timer would only make them wait
      if (lock.producersSince === undefined) {
        lock.producersSince = now;
        this.opts.lookAgain(queue);
        return;
      }
      const { minMs, maxMs, fraction } = PRODUCERS_RETRY;
      this.later(lock, Math.min(maxMs, Math.max(minMs, (now - lock.producersSince) * fraction)), () => this.opts.lookAgain(queue));
    } else {
      lock.failures++;
      this.later(lock, backoffMs(lock.failures, WORKER_RETRY), () => this.settle(queue, lock));
    }
  }

  private async release(queue: string, lock: QueueLock, session: ListenerSession): Promise<void> {
    lock.busy = true;
    lock.heldBy = undefined;
    try {
      await this.opts.release(session.db, queue);
    } catch (err) {
      this.opts.log.debug({ err: errorSummary(err), queue }, 'giving the wake lock back failed; it goes with the connection');
    } finally {
      lock.busy = false;
    }
    this.settle(queue, lock);
  }

  private later(lock: QueueLock, ms: number, fn: () => void): void {
    lock.retry = this.clock.setTimeout(() => {
      lock.retry = undefined;
      if (!this.stopped && lock.wanted) fn();
    }, ms);
  }
}
