// A job while this worker runs it. Whoever must stop it (timeout, cancellation, loss of the job,
// shutdown) calls abort(); the handler sees it through its AbortSignal.
import { JobAbortedError, type AbortCause } from '../errors.js';
import type { ClaimedJob } from './claim.js';

export class RunningJob {
  abortedBy: AbortCause | undefined;
  /** The handler has settled; only its outcome may still be on its way to the database. */
  handlerDone = false;
  // made on first use: most handlers never look at their signal, and one costs microseconds
  private controller: AbortController | undefined;
  private abortReason: JobAbortedError | undefined;
  private onAbort: ((cause: AbortCause) => void) | undefined;

  constructor(readonly job: ClaimedJob) {}

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  abort(cause: AbortCause, message: string): void {
    if (this.abortedBy) return;
    this.abortedBy = cause;
    this.abortReason = new JobAbortedError(cause, message);
    this.controller?.abort(this.abortReason);
    this.onAbort?.(cause);
  }

  whenAborted(fn: (cause: AbortCause) => void): void {
    this.onAbort = fn;
    if (this.abortedBy) fn(this.abortedBy);
  }

  offAborted(): void {
    this.onAbort = undefined;
  }
}
