// The one dedicated LISTEN connection, as a stream of events. Notifications are hints: every
// (re)connect is reported so the worker looks for work it may have missed while disconnected.
// The listener owns its reconnection: whatever ends a connection (lost, refused, an error, a
// LISTEN that fails because the server is in recovery, a ping that does not come back), the
// connection is closed and a new one is tried with jittered back-off, forever. pg-listen's own
// reconnect is off: when its re-LISTEN fails it stays deaf for good, and a reconnect racing a
// close could leave a connection behind. One log line when it starts failing, one when it is
// back; the attempts in between are counted, not logged. With several hosts in its URL each
// attempt goes to the next host until one takes the LISTEN (a server in recovery refuses it).
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import pgListen from 'pg-listen';
import { NEVER, Subject, type Observable } from 'rxjs';
import type { Logger } from '../observe/logger.js';
import { backoffMs } from '../util/backoff.js';
import { sleep, TIMED_OUT, withTimeout } from '../util/time.js';
import { SERVER_KEEPALIVE_OPTIONS } from '../db/pool.js';
import { errorSummary } from '../db/errors.js';
import { PrimaryLocator } from '../db/primary.js';
import { locatedTarget } from '../db/target.js';
import type { ListenerSession } from './wake-locks.js';

// pg-listen is CommonJS: under NodeNext its function is the default export's `default`
const createSubscriber = pgListen.default;
type Subscriber = ReturnType<typeof createSubscriber>;

export type ListenerEvent =
  | { type: 'connected' }
  | { type: 'disconnected' }
  /** Jobs became runnable now (`due`) and/or at `runAt` (the earliest still in the future). */
  | { type: 'jobs'; queue: string; due: boolean; runAt: Date | undefined }
  | { type: 'cancel'; id: string }
  /** A queue's limits or pause changed. */
  | { type: 'queueSettings'; queue: string };

export interface ListenerOptions {
  url: string;
  channel: string;
  applicationName: string;
  connectTimeoutMs: number;
  /** How often the connection proves itself with a ping through NOTIFY. */
  checkIntervalMs: number;
  /** How long a ping may take before the connection is replaced. */
  checkTimeoutMs: number;
  /**
   * The pool's locator, when the listener connects to the same hosts: it listens where the pool
   * found the primary, and moves when the pool does (LISTEN and NOTIFY both work on a primary
   * made read-only, so only the pool's writes can tell).
   */
  primaryLocator?: PrimaryLocator;
  log: Logger;
}

/** Reconnect backoff: up to 100 ms, doubling to at most 10 s (attempt counts from 1). */
export function reconnectDelayMs(attempt: number): number {
  return backoffMs(attempt, { baseMs: 100, maxMs: 10_000, jitter: 'full' });
}

/** What the worker and the wake-ups use of a listener. */
export interface Notifications {
  readonly events$: Observable<ListenerEvent>;
  readonly connected: boolean;
  /** True when there is no LISTEN connection by design: wake-ups come from the poll alone. */
  readonly pollingOnly: boolean;
  readonly failedAttempts: number;
  readonly lastError: string | undefined;
  /** The LISTEN connection while there is one: the wake locks live on it. */
  session(): ListenerSession | undefined;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * No LISTEN connection: behind a transaction pooler without database.listenUrl, LISTEN would
 * land on a server connection other clients share and hear nothing. The poll finds the work.
 */
export class PollingOnly implements Notifications {
  readonly events$: Observable<ListenerEvent> = NEVER;
  readonly connected = false;
  readonly pollingOnly = true;
  readonly failedAttempts = 0;
  readonly lastError = undefined;
  session(): undefined {
    return undefined;
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
}

export class Listener implements Notifications {
  readonly pollingOnly = false;
  private readonly subject = new Subject<ListenerEvent>();
  readonly events$: Observable<ListenerEvent> = this.subject.asObservable();
  connected = false;
  /** Connections re-established after one was lost. */
  reconnects = 0;
  /** Attempts to connect and LISTEN that failed, since the start. */
  failedAttempts = 0;
  /** Why the last attempt failed, while it is failing (for /readyz). */
  lastError: string | undefined;
  private subscriber: Subscriber | undefined;
  private current: ListenerSession | undefined;
  private sessions = 0;
  private stopped = false;
  private connecting: Promise<void> | undefined;
  /** When the current run of failures began (0: not failing). */
  private failingSince = 0;
  private checkTimer: NodeJS.Timeout | undefined;
  private pendingPing: { nonce: string; resolve: () => void } | undefined;
  private readonly wakeFromSleep = new AbortController();
  /** With several hosts (or target_session_attrs) in the URL: which one to try next. */
  private readonly locator: PrimaryLocator | undefined;
  /** The host of the current connection (index into the locator's hosts). */
  private host = 0;

  constructor(private readonly opts: ListenerOptions) {
    const target = opts.primaryLocator ? undefined : locatedTarget(opts.url);
    this.locator = opts.primaryLocator ?? (target && new PrimaryLocator(target));
  }

  /** host:port of the LISTEN connection, when the URL names several hosts. */
  get hostLabel(): string | undefined {
    return this.locator?.target.label(this.host);
  }

  /** Resolves once listening; keeps retrying (with backoff) while that is not possible. */
  async start(): Promise<void> {
    await this.connectUntilListening(false);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wakeFromSleep.abort();
    clearTimeout(this.checkTimer);
    // an attempt under way sees `stopped` when it returns and closes what it opened
    await withTimeout(this.connecting ?? Promise.resolve(), 2000);
    const sub = this.subscriber;
    this.subscriber = undefined;
    this.setConnected(false);
    if (sub) await closeQuietly(sub);
    this.subject.complete();
  }

  private connectUntilListening(reconnect: boolean): Promise<void> {
    this.connecting ??= this.connectLoop(reconnect).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async connectLoop(reconnect: boolean): Promise<void> {
    for (let attempt = 1; !this.stopped; attempt++) {
      const host = this.locator?.candidate() ?? 0;
      const ticket = this.locator?.beginAttempt();
      const { sub, client } = this.createSubscriber(this.locator ? this.locator.target.urlFor(host) : this.opts.url);
      try {
        await sub.connect();
        await sub.listenTo(this.opts.channel);
      } catch (err) {
        await closeQuietly(sub);
        this.locator?.failed(host, err, ticket);
        this.failedAttempts++;
        this.lastError = errorSummary(err).message;
        if (!this.failingSince) {
          this.failingSince = Date.now();
          this.opts.log.warn({ err: errorSummary(err) }, 'listener cannot connect and LISTEN; retrying until it can');
        }
        await sleep(reconnectDelayMs(attempt), this.wakeFromSleep.signal);
        continue;
      }
      if (this.stopped) {
        await closeQuietly(sub);
        return;
      }
      this.subscriber = sub;
      this.current = { id: ++this.sessions, db: client };
      this.host = host;
      // a shared locator is confirmed by the pool alone, which checks that the server takes writes
      if (!this.opts.primaryLocator) this.locator?.confirmed(host);
      if (this.failingSince) {
        const at = this.hostLabel ? { host: this.hostLabel } : {};
        this.opts.log.info({ attempts: attempt, afterMs: Date.now() - this.failingSince, lastError: this.lastError, ...at }, 'listener is listening again');
        this.failingSince = 0;
        this.lastError = undefined;
      }
      if (reconnect) this.reconnects++;
      this.setConnected(true);
      this.scheduleCheck();
      return;
    }
  }

  /** The connection `sub` is no longer good: close it and find a new one. */
  private lost(sub: Subscriber, reason: string, err?: unknown): void {
    if (sub !== this.subscriber || this.stopped) return;
    this.subscriber = undefined;
    clearTimeout(this.checkTimer);
    this.setConnected(false);
    this.failingSince = Date.now();
    this.lastError = err ? errorSummary(err).message : reason;
    this.locator?.suspect(this.host);
    this.opts.log.warn({ reason, ...(err ? { err: errorSummary(err) } : {}) }, 'listener connection lost; reconnecting');
    void closeQuietly(sub);
    void this.connectUntilListening(true);
  }

  session(): ListenerSession | undefined {
    return this.connected ? this.current : undefined;
  }

  private createSubscriber(url: string): { sub: Subscriber; client: pg.Client } {
    const { sub, client } = subscriberWithClient(
      {
        connectionString: url,
        application_name: this.opts.applicationName,
        connectionTimeoutMillis: this.opts.connectTimeoutMs,
        query_timeout: this.opts.checkTimeoutMs,
        keepAlive: true,
        options: SERVER_KEEPALIVE_OPTIONS,
      },
      {
        // a retry limit of 1 makes no attempt: a lost connection surfaces as 'error', and the
        // listener reconnects by itself (see the top of this file)
        retryLimit: 1,
        retryTimeout: 0,
        // its check (SELECT pg_backend_pid()) cannot see a lost LISTEN; the ping below can
        paranoidChecking: false,
        parse: (text: string) => text,
      },
    );
    sub.events.on('notification', (n: { payload?: unknown }) => this.onNotification(String(n.payload ?? '')));
    sub.events.on('error', (err: Error) => this.lost(sub, 'the connection failed', err));
    return { sub, client };
  }

  private setConnected(up: boolean): void {
    if (!up) this.current = undefined;
    if (this.connected === up) return;
    this.connected = up;
    this.subject.next({ type: up ? 'connected' : 'disconnected' });
  }

  private onNotification(payload: string): void {
    let msg: { queue?: unknown; due?: unknown; runAt?: unknown; cancel?: unknown; ping?: unknown; queueSettings?: unknown };
    try {
      msg = JSON.parse(payload);
    } catch {
      this.opts.log.debug({ payload: payload.slice(0, 200) }, 'ignored a notification that is not JSON');
      return;
    }
    if (msg === null || typeof msg !== 'object') return;
    if (typeof msg.ping === 'string') {
      if (this.pendingPing?.nonce === msg.ping) this.pendingPing.resolve();
      return;
    }
    if (typeof msg.queue === 'string') {
      const runAt = typeof msg.runAt === 'string' ? new Date(msg.runAt) : undefined;
      const valid = runAt && !Number.isNaN(runAt.getTime()) ? runAt : undefined;
      // a notification without `due` (sent by hand) is taken as due
      this.subject.next({ type: 'jobs', queue: msg.queue, due: msg.due !== false || !valid, runAt: valid });
    } else if (typeof msg.cancel === 'string' || typeof msg.cancel === 'number') {
      this.subject.next({ type: 'cancel', id: String(msg.cancel) });
    } else if (typeof msg.queueSettings === 'string') {
      this.subject.next({ type: 'queueSettings', queue: msg.queueSettings });
    }
  }

  private scheduleCheck(): void {
    if (this.stopped) return;
    clearTimeout(this.checkTimer);
    this.checkTimer = setTimeout(() => void this.check(), this.opts.checkIntervalMs);
  }

  private async check(): Promise<void> {
    const sub = this.subscriber;
    if (!sub) return;
    const shared = this.opts.primaryLocator;
    if (shared?.reachable && shared.candidate() !== this.host) {
      this.lost(sub, `the pool found the primary at ${shared.target.label(shared.candidate())}`);
      return;
    }
    const nonce = randomUUID();
    const echoed = new Promise<void>((resolve) => (this.pendingPing = { nonce, resolve }));
    // a NOTIFY that fails (the server went into recovery, say) is a ping that never comes back
    let sent = false;
    sub.notify(this.opts.channel, { ping: nonce }).then(() => (sent = true), () => undefined);
    const ok = (await withTimeout(echoed, this.opts.checkTimeoutMs)) !== TIMED_OUT;
    this.pendingPing = undefined;
    if (sub !== this.subscriber) return;
    if (ok) this.scheduleCheck();
    else {
      // the connection ran the NOTIFY but did not hear it: its LISTEN is not where notifications
      // arrive, as on the shared server connections of a transaction pooler
      const why = sent
        ? ': its NOTIFY ran but it heard nothing, as behind a transaction pooler (PgBouncer) that swallows LISTEN; point database.listenUrl at PostgreSQL itself'
        : '';
      this.lost(sub, `it did not hear its own ping within ${this.opts.checkTimeoutMs} ms${why}`);
    }
  }
}

async function closeQuietly(sub: Subscriber): Promise<void> {
  await withTimeout(sub.close().catch(() => undefined), 2000);
}

/**
 * pg-listen keeps its pg.Client to itself, but the wake locks must live on that very connection:
 * on another one they would break the pool.max + 1 bound and could outlive a lost LISTEN. It
 * builds the client synchronously inside createSubscriber, from the pg module's Client: a subclass
 * put there for the length of that call hands the client over.
 */
function subscriberWithClient(...args: Parameters<typeof createSubscriber>): { sub: Subscriber; client: pg.Client } {
  const Base = pg.Client;
  let client: pg.Client | undefined;
  pg.Client = class extends Base {
    constructor(config?: string | pg.ClientConfig) {
      super(config);
      client ??= this;
    }
  };
  let sub: Subscriber;
  try {
    sub = createSubscriber(...args);
  } finally {
    pg.Client = Base;
  }
  if (!client) throw new Error('pg-listen no longer builds its client from pg.Client: the wake locks cannot reach the LISTEN connection');
  return { sub, client };
}
