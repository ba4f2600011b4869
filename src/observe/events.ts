// What happens to jobs and to the worker, as typed events. The job path only emits them; metrics,
// logs (and tracing or a live dashboard later) subscribe, so none of them is threaded through the
// code that runs jobs.
import type { AbortCause } from '../errors.js';

/** The job an event is about: what every subscriber may read of it. */
export interface JobRef {
  id: string;
  queue: string;
  task: string;
  attempt: number;
  runAt: Date;
}

export type SluiceEvent =
  /** A claim statement ran and took `jobs` jobs (0 when the queues were empty). */
  | { type: 'claim'; jobs: number }
  | { type: 'job.started'; job: JobRef; lagMs: number }
  | { type: 'job.completed'; job: JobRef; seconds: number; inTransaction: boolean }
  | { type: 'job.retried'; job: JobRef; seconds: number; error: string; retryInMs: number }
  | { type: 'job.failed'; job: JobRef; seconds: number; error: string; permanent: boolean }
  /** The handler returned snooze(ms): back to queued, due in `delayMs`, the attempt not spent. */
  | { type: 'job.snoozed'; job: JobRef; seconds: number; delayMs: number }
  /** The handler was aborted: cancelled, the job lost to another holder, or released at shutdown. */
  | { type: 'job.aborted'; job: JobRef; cause: Exclude<AbortCause, 'timeout'> }
  /** An outcome was refused: the job was cancelled, rescued or re-claimed meanwhile. */
  | { type: 'job.fenced'; job: JobRef; outcome: 'completed' | 'failed' | 'snoozed' | 'completed-in-transaction' }
  /** An aborted handler still runs `afterMs` after the abort (and keeps its slot). */
  | { type: 'job.stuck'; job: JobRef; cause: AbortCause; afterMs: number }
  | { type: 'job.unstuck'; job: JobRef }
  /** A dead worker's job was put back to queued (or failed, with no attempts left) by this worker. */
  | { type: 'job.rescued'; id: string; queue: string; task: string; lostWorker: string | null; status: string }
  | { type: 'notification' }
  | { type: 'listener.reconnected' }
  | { type: 'listener.down' };

export type EventType = SluiceEvent['type'];
export type EventOf<T extends EventType> = Extract<SluiceEvent, { type: T }>;

export class Events {
  private listeners: ((event: SluiceEvent) => void)[] = [];

  /** Calls `fn` with every event from now on; returns the unsubscribe function. */
  on(fn: (event: SluiceEvent) => void): () => void {
    this.listeners = [...this.listeners, fn];
    return () => {
      this.listeners = this.listeners.filter((l) => l !== fn);
    };
  }

  emit(event: SluiceEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // a subscriber's failure must never break the job path
      }
    }
  }
}
