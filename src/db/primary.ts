// Which host of a multi-host URL is the writable primary, as far as this process knows. The pool
// and the listener ask it which host to try next and tell it how each attempt went; it keeps the
// state (found, lost, searching), the back-off between full passes over the hosts, and logs one
// line per change of state, never one per attempt.
import type { Logger } from '../observe/logger.js';
import { backoffMs } from '../util/backoff.js';
import { errorSummary } from './errors.js';
import type { DatabaseTarget } from './target.js';

/** Between two passes over every host without a primary: up to 250 ms, doubling to at most 5 s. */
const SEARCH_BACKOFF = { baseMs: 250, maxMs: 5000, jitter: 'full' } as const;

export type PrimaryState = 'starting' | 'found' | 'lost' | 'searching';

export interface PrimaryLocatorOptions {
  /** Where state changes are logged; none: not logged (the listener logs its own). */
  log?: Logger;
  now?: () => number;
  random?: () => number;
}

export class PrimaryLocator {
  state: PrimaryState = 'starting';
  /** Bumped whenever the primary may have changed: connections made before are not reused. */
  generation = 0;
  /** Primaries found on another host than the one before. */
  failovers = 0;
  /** The last failure, as `host:port: message`, while there is no primary. */
  lastError: string | undefined;
  private primary: number | undefined;
  private previousPrimary: number | undefined;
  private next = 0;
  private failuresInRow = 0;
  private since: number;
  private retryAt = 0;
  /** Attempts begun so far, and how many had begun when the primary was last confirmed. */
  private begun = 0;
  private begunAtConfirmation = 0;
  private readonly now: () => number;

  constructor(readonly target: DatabaseTarget, private readonly opts: PrimaryLocatorOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.since = this.now();
  }

  /** True while a primary is known (reads: /readyz). */
  get reachable(): boolean {
    return this.state === 'found';
  }

  /** The host to try: the known primary, else the next one in order. */
  candidate(): number {
    return this.primary ?? this.next;
  }

  /** How long to wait before the next attempt (a pass over every host failed): 0 for at once. */
  waitMs(): number {
    return Math.max(0, this.retryAt - this.now());
  }

  /** An attempt to connect begins; its number goes with its outcome. */
  beginAttempt(): number {
    return ++this.begun;
  }

  /** hosts[i] took a connection and is a writable primary (or any host will do). */
  confirmed(i: number): void {
    this.begunAtConfirmation = this.begun;
    const wasMissing = this.state === 'lost' || this.state === 'searching';
    if (this.previousPrimary !== undefined && this.previousPrimary !== i) this.failovers++;
    if (wasMissing) {
      const afterS = ((this.now() - this.since) / 1000).toFixed(1);
      this.opts.log?.info({ host: this.target.label(i), afterMs: this.now() - this.since, lastError: this.lastError }, `database primary found at ${this.target.label(i)} after ${afterS} s`);
    }
    this.primary = this.previousPrimary = this.next = i;
    this.state = 'found';
    this.failuresInRow = 0;
    this.retryAt = 0;
    this.lastError = undefined;
  }

  /**
   * Connecting to hosts[i] failed, or it is not a writable primary. `attempt` (from beginAttempt)
   * tells a stale answer apart: an attempt begun before the primary was confirmed may report a
   * server still in recovery after another attempt found it promoted.
   */
  failed(i: number, err: unknown, attempt = Infinity): void {
    if (this.primary === i && attempt <= this.begunAtConfirmation) return;
    this.lastError = `${this.target.label(i)}: ${errorSummary(err).message}`;
    if (this.primary === i) {
      this.primary = undefined;
      this.generation++;
      this.state = 'lost';
      this.since = this.now();
      this.opts.log?.warn({ host: this.target.label(i), err: errorSummary(err) }, `database primary lost at ${this.target.label(i)}; trying the hosts in order`);
    } else if (this.primary !== undefined) {
      // an attempt begun before the primary was confirmed elsewhere: nothing to change
      return;
    }
    if (this.next === i) this.next = (i + 1) % this.target.hosts.length;
    this.failuresInRow++;
    if (this.failuresInRow < this.target.hosts.length) return;
    if (this.state !== 'searching') {
      if (this.state === 'starting') this.since = this.now();
      this.state = 'searching';
      const hosts = this.target.hosts.map((_, n) => this.target.label(n)).join(', ');
      this.opts.log?.warn({ hosts, lastError: this.lastError }, `no writable primary reachable among ${hosts}; searching with back-off`);
    }
    this.retryAt = this.now() + backoffMs(Math.floor(this.failuresInRow / this.target.hosts.length), SEARCH_BACKOFF, this.opts.random);
  }

  /**
   * A connection to hosts[i] failed in a way a failover causes (read-only, admin shutdown, lost):
   * connections made before are not reused, and the next connect checks the host again.
   */
  suspect(i: number): void {
    if (this.primary === i) this.generation++;
  }
}
