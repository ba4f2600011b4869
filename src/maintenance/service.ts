// The lifecycle every background part of a worker shares: start, a periodic run with jitter,
// a back-off while runs fail, and a stop that waits for the run under way. A new service is one
// subclass with one runOnce(), listed in maintenance/index.ts.
import { errorSummary } from '../db/errors.js';
import type { Logger } from '../observe/logger.js';
import { jittered } from '../util/backoff.js';
import { systemClock, type Clock, type Timer } from '../util/time.js';

export interface Service {
  readonly name: string;
  start(): void;
  /** Stops scheduling and resolves once a run under way has finished. */
  stop(): Promise<void>;
}

export interface PeriodicOptions {
  everyMs: number;
  /** Delay of the first run; one (jittered) interval when omitted. */
  firstRunMs?: number;
  /** ±25% on every interval, so that workers started together do not act in lockstep (default on). */
  jitter?: boolean;
  /** While runs fail, the interval doubles up to this factor (1: no back-off). Default 4. */
  maxBackoff?: number;
  log: Logger;
  clock?: Clock;
}

export abstract class PeriodicService implements Service {
  abstract readonly name: string;
  /** The log line of a failed run. */
  protected abstract readonly failureMessage: string;
  private timer: Timer | undefined;
  private stopped = false;
  private retired = false;
  private failures = 0;
  private running: Promise<void> | undefined;
  protected readonly clock: Clock;

  constructor(protected readonly periodic: PeriodicOptions) {
    this.clock = periodic.clock ?? systemClock;
  }

  /** One run of the service's work. */
  protected abstract runOnce(): Promise<void>;

  /** False when the service has nothing to do with this configuration: start() then does nothing. */
  protected enabled(): boolean {
    return true;
  }

  /** Called by stop() before it waits for the run under way (to cancel a long statement, say). */
  protected interrupt(): Promise<void> | void {}

  /** Stops scheduling runs for good (the service found it cannot work here). */
  protected retire(): void {
    this.retired = true;
  }

  protected get isStopped(): boolean {
    return this.stopped;
  }

  start(): void {
    if (!this.enabled()) return;
    this.schedule(this.periodic.firstRunMs ?? this.interval());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.clock.clearTimeout(this.timer);
    await this.interrupt();
    await this.running;
  }

  private interval(): number {
    const backoff = Math.min(2 ** Math.max(0, this.failures - 1), this.periodic.maxBackoff ?? 4);
    const ms = this.periodic.everyMs * (this.failures ? backoff : 1);
    return this.periodic.jitter === false ? ms : jittered(ms);
  }

  private schedule(ms: number): void {
    if (this.stopped || this.retired) return;
    this.timer = this.clock.setTimeout(() => {
      this.running = this.runOnce()
        .then(
          () => {
            this.failures = 0;
          },
          (err) => {
            this.failures++;
            if (!this.stopped) this.periodic.log.warn({ err: errorSummary(err) }, this.failureMessage);
          },
        )
        .finally(() => {
          this.running = undefined;
          this.schedule(this.interval());
        });
    }, ms);
  }
}
