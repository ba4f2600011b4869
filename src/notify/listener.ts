// The one dedicated LISTEN connection, as a stream of events. Notifications are hints: every
// (re)connect is reported so the worker looks for work it may have missed while disconnected.
// The connection checks itself end to end: it NOTIFYs a ping to its own channel and expects it
// back in time; a frozen or half-open link is replaced.
import { randomUUID } from 'node:crypto';
import pgListen from 'pg-listen';
import { Subject, type Observable } from 'rxjs';
import type { Logger } from '../observe/logger.js';
import { backoffMs } from '../util/backoff.js';
import { sleep, TIMED_OUT, withTimeout } from '../util/time.js';
import { SERVER_KEEPALIVE_OPTIONS } from '../db/pool.js';
import { errorSummary } from '../db/errors.js';

// pg-listen is CommonJS: under NodeNext its function is the default export's `default`
const createSubscriber = pgListen.default;
type Subscriber = ReturnType<typeof createSubscriber>;

export type ListenerEvent =
  | { type: 'connected' }
  | { type: 'disconnected' }
  /** Jobs became runnable now (`due`) and/or at `runAt` (the earliest still in the future). */
  | { type: 'jobs'; queue: string; due: boolean; runAt: Date | undefined }
  | { type: 'cancel'; id: string };

export interface ListenerOptions {
  url: string;
  channel: string;
  applicationName: string;
  connectTimeoutMs: number;
  /** How often the connection proves itself with a ping through NOTIFY. */
  checkIntervalMs: number;
  /** How long a ping may take before the connection is replaced. */
  checkTimeoutMs: number;
  log: Logger;
}

/** Reconnect backoff: up to 100 ms, doubling to at most 10 s (attempt counts from 0). */
export function reconnectDelayMs(attempt: number): number {
  return backoffMs(attempt + 1, { baseMs: 100, maxMs: 10_000, jitter: 'full' });
}

export class Listener {
  private readonly subject = new Subject<ListenerEvent>();
  readonly events$: Observable<ListenerEvent> = this.subject.asObservable();
  connected = false;
  reconnects = 0;
  private subscriber: Subscriber | undefined;
  private stopped = false;
  private checkTimer: NodeJS.Timeout | undefined;
  private pendingPing: { nonce: string; resolve: () => void } | undefined;

  constructor(private readonly opts: ListenerOptions) {}

  /** Resolves once listening; keeps retrying (with backoff) while the database is unreachable. */
  async start(): Promise<void> {
    await this.connectWithRetry();
    this.scheduleCheck();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.checkTimer);
    const sub = this.subscriber;
    this.subscriber = undefined;
    this.setConnected(false);
    if (sub) await withTimeout(sub.close().catch(() => undefined), 2000);
    this.subject.complete();
  }

  private async connectWithRetry(): Promise<void> {
    for (let attempt = 0; !this.stopped; attempt++) {
      const sub = this.createSubscriber();
      try {
        await sub.connect();
        await sub.listenTo(this.opts.channel);
        if (this.stopped) {
          await sub.close().catch(() => undefined);
          return;
        }
        this.subscriber = sub;
        this.setConnected(true);
        return;
      } catch (err) {
        // a failed connect() leaves pg-listen's own reconnect loop running: close that subscriber
        sub.close().catch(() => undefined);
        const delay = reconnectDelayMs(attempt);
        this.opts.log.warn({ err: errorSummary(err), retryInMs: Math.round(delay) }, 'listener cannot connect to PostgreSQL; retrying');
        await sleep(delay);
      }
    }
  }

  private createSubscriber(): Subscriber {
    const sub = createSubscriber(
      {
        connectionString: this.opts.url,
        application_name: this.opts.applicationName,
        connectionTimeoutMillis: this.opts.connectTimeoutMs,
        query_timeout: this.opts.checkTimeoutMs,
        keepAlive: true,
        options: SERVER_KEEPALIVE_OPTIONS,
      },
      {
        // pg-listen's defaults give up after 3 s; sluice never gives up
        retryTimeout: Infinity,
        retryLimit: Infinity,
        retryInterval: reconnectDelayMs,
        // its check (SELECT pg_backend_pid()) cannot see a lost LISTEN; the ping below can
        paranoidChecking: false,
        parse: (text: string) => text,
      },
    );
    sub.events.on('notification', (n: { payload?: unknown }) => this.onNotification(String(n.payload ?? '')));
    sub.events.on('reconnect', (attempt: number) => {
      if (sub !== this.subscriber) return;
      this.setConnected(false);
      if (attempt === 1 || attempt % 20 === 0) this.opts.log.warn({ attempt }, 'listener connection lost; reconnecting');
    });
    sub.events.on('connected', () => {
      if (sub !== this.subscriber || this.connected) return;
      this.reconnects++;
      this.setConnected(true);
      this.opts.log.info('listener reconnected');
    });
    sub.events.on('error', (err: Error) => this.opts.log.warn({ err: errorSummary(err) }, 'listener error'));
    return sub;
  }

  private setConnected(up: boolean): void {
    if (this.connected === up) return;
    this.connected = up;
    this.subject.next({ type: up ? 'connected' : 'disconnected' });
  }

  private onNotification(payload: string): void {
    let msg: { queue?: unknown; due?: unknown; runAt?: unknown; cancel?: unknown; ping?: unknown };
    try {
      msg = JSON.parse(payload);
    } catch {
      this.opts.log.debug({ payload: payload.slice(0, 200) }, 'ignored a notification that is not JSON');
      return;
    }
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
    }
  }

  private scheduleCheck(): void {
    if (this.stopped) return;
    this.checkTimer = setTimeout(() => void this.check(), this.opts.checkIntervalMs);
  }

  private async check(): Promise<void> {
    const sub = this.subscriber;
    if (!sub || !this.connected) {
      this.scheduleCheck();
      return;
    }
    const nonce = randomUUID();
    const echoed = new Promise<void>((resolve) => (this.pendingPing = { nonce, resolve }));
    sub.notify(this.opts.channel, { ping: nonce }).catch(() => undefined);
    const ok = (await withTimeout(echoed, this.opts.checkTimeoutMs)) !== TIMED_OUT;
    this.pendingPing = undefined;
    if (!ok && !this.stopped && sub === this.subscriber) {
      this.opts.log.warn({ timeoutMs: this.opts.checkTimeoutMs }, 'listener did not hear its own ping; replacing the connection');
      this.subscriber = undefined;
      this.setConnected(false);
      sub.close().catch(() => undefined);
      await this.connectWithRetry();
      this.reconnects++;
    }
    this.scheduleCheck();
  }
}
