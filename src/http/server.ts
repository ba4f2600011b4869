// The daemon's HTTP endpoints (node:http, no framework):
//   /healthz  liveness: 200 while the process and its event loop are sound; 503 only when the
//             loop has been stuck for many seconds, which means "restart me".
//   /readyz   readiness: 200 only while the worker is running with its listener connected and,
//             with a multi-host database.url, a writable primary found; 503 with a small JSON
//             reason otherwise. It fails first during a graceful shutdown. Database health
//             warnings show in a `warning` field, and the worker stays ready: a restart would
//             not release a horizon another session holds.
//   /metrics  Prometheus text from the worker's registry.
//   /dashboard/  the dashboard (src/dashboard/), when one is given.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { redact } from '../util/redact.js';

/** What the endpoints need from a worker (a Worker satisfies it). */
export interface HttpWorker {
  readonly ready: boolean;
  readonly state: string;
  readonly metrics: { registry: Registry };
  stats?(): { listenerConnected: boolean; listenerError?: string; primaryError?: string };
  /** Database health thresholds passed (a held xmin horizon, say): shown, never a reason to be unready. */
  healthWarnings?(): string[];
}

export interface HttpOptions {
  host: string;
  /** 0 picks a free port; the returned url names the real one. */
  port: number;
  /** /healthz fails when the event loop has not turned for this long (default 10 s). */
  stallAfterMs?: number;
  /** How often the event loop is sampled (default 500 ms). */
  tickMs?: number;
  /** How long an idle keep-alive connection stays open (default 5 s). */
  keepAliveMs?: number;
  /** Serves /dashboard and everything below it (src/dashboard/routes.ts). */
  dashboard?: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
}

export interface HttpServer {
  /** Base URL, e.g. http://127.0.0.1:8787 (a wildcard bind address is shown as loopback). */
  url: string;
  /** The address actually bound. */
  host: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Watches the event loop with a ticker: the lag of a tick is how late it ran. The loop is stuck
 * when no tick has run for stallAfterMs, or the last tick came that late.
 */
class LoopWatch {
  private lastTick = performance.now();
  private lastLagMs = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly histogram: IntervalHistogram;

  constructor(private readonly tickMs: number) {
    this.histogram = monitorEventLoopDelay({ resolution: 10 });
    this.histogram.enable();
    this.timer = setInterval(() => {
      const now = performance.now();
      this.lastLagMs = Math.max(0, now - this.lastTick - this.tickMs);
      this.lastTick = now;
    }, tickMs);
    this.timer.unref();
  }

  /** How long the loop has been (or just was) stuck, in ms. */
  stalledMs(): number {
    const sinceTick = performance.now() - this.lastTick - this.tickMs;
    return Math.max(this.lastLagMs, sinceTick, 0);
  }

  delays(): { p50: number; p99: number; max: number } {
    const ms = (ns: number) => Math.round((Number.isFinite(ns) ? ns : 0) / 1e4) / 100;
    const h = this.histogram;
    const out = { p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max) };
    h.reset();
    return out;
  }

  stop(): void {
    clearInterval(this.timer);
    this.histogram.disable();
  }
}

function send(res: ServerResponse, status: number, body: unknown, head: boolean): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body) + '\n';
  res.writeHead(status, {
    'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
  });
  res.end(head ? undefined : text);
}

export function readiness(worker: HttpWorker): { ready: boolean; reason?: string } {
  if (worker.state !== 'running') return { ready: false, reason: `worker is ${worker.state}` };
  if (!worker.ready) {
    const stats = worker.stats?.();
    if (stats?.primaryError) return { ready: false, reason: redact(stats.primaryError) };
    if (stats && !stats.listenerConnected) {
      return { ready: false, reason: `the LISTEN connection is down${stats.listenerError ? `: ${redact(stats.listenerError)}` : ''}` };
    }
    return { ready: false, reason: 'the database is not answering heartbeats' };
  }
  return { ready: true };
}

export async function startHttpServer(worker: HttpWorker, opts: HttpOptions): Promise<HttpServer> {
  const stallAfterMs = opts.stallAfterMs ?? 10_000;
  const watch = new LoopWatch(opts.tickMs ?? 500);

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const head = req.method === 'HEAD';
    const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (opts.dashboard && (pathname === '/dashboard' || pathname.startsWith('/dashboard/'))) return opts.dashboard(req, res);
    if (req.method !== 'GET' && !head) {
      res.setHeader('allow', 'GET, HEAD');
      return send(res, 405, { error: 'method not allowed' }, head);
    }
    switch (pathname) {
      case '/healthz': {
        const stalledMs = Math.round(watch.stalledMs());
        const eventLoopDelayMs = watch.delays();
        if (stalledMs >= stallAfterMs) {
          return send(res, 503, { status: 'unhealthy', reason: `event loop stuck for ${stalledMs} ms`, eventLoopDelayMs }, head);
        }
        return send(res, 200, { status: 'ok', state: worker.state, eventLoopDelayMs }, head);
      }
      case '/readyz': {
        const r = readiness(worker);
        const warnings = worker.healthWarnings?.() ?? [];
        const warning = warnings.length ? { warning: warnings.join('; ') } : {};
        return r.ready
          ? send(res, 200, { status: 'ready', ...warning }, head)
          : send(res, 503, { status: 'not ready', reason: r.reason, ...warning }, head);
      }
      case '/metrics': {
        const registry = worker.metrics.registry;
        const text = await registry.metrics();
        res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' });
        res.end(head ? undefined : text);
        return;
      }
      default:
        return send(res, 404, { error: 'not found', endpoints: ['/healthz', '/readyz', '/metrics', ...(opts.dashboard ? ['/dashboard/'] : [])] }, head);
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, { error: (err as Error).message ?? String(err) }, false);
      else res.destroy();
    });
  });
  // A probe must never wait behind an idle keep-alive socket at shutdown.
  server.keepAliveTimeout = opts.keepAliveMs ?? 5000;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => {
      watch.stop();
      reject(describeListenError(err, opts));
    };
    server.once('error', onError);
    server.listen(opts.port, opts.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const shown = addr.address === '0.0.0.0' ? '127.0.0.1' : addr.address === '::' ? '::1' : addr.address;
  const url = `http://${shown.includes(':') ? `[${shown}]` : shown}:${addr.port}`;

  let closing: Promise<void> | undefined;
  return {
    url,
    host: addr.address,
    port: addr.port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        watch.stop();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

function describeListenError(err: Error, opts: HttpOptions): Error {
  const code = (err as NodeJS.ErrnoException).code;
  const where = `${opts.host}:${opts.port}`;
  if (code === 'EADDRINUSE') return new Error(`http.port: ${where} is already in use (set http.port or SLUICE_HTTP_PORT, 0 picks a free one)`);
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') return new Error(`http.host: cannot bind to ${opts.host} (${code})`);
  if (code === 'EACCES') return new Error(`http.port: not allowed to bind to ${where} (ports below 1024 need privileges)`);
  return new Error(`cannot serve HTTP on ${where}: ${err.message}`);
}
