// The dashboard on an HTTP server: /dashboard/ (the page, or the login form), /dashboard/assets/
// (browser files), /dashboard/api/ (JSON reads and actions). The daemon mounts it on its own
// server with the worker's pool (so the worker still holds at most poolSize + 1 connections);
// `sluice dashboard` mounts it with a pool of its own.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type pg from 'pg';
import { readBudget } from '../admin/budget.js';
import { listCron } from '../admin/cron.js';
import { readHealth, type HealthThresholds } from '../admin/health.js';
import type { CronEntry } from '../config/cron.js';
import { JobNotFoundError, JobStateError, SluiceError } from '../errors.js';
import type { Logger } from '../observe/logger.js';
import { redact } from '../util/redact.js';
import { applyJobAction, applyQueueAction, bulkJobAction, DashboardInputError, pageJobs, parseAction, parseFilter, readJob, readOverview, readWorkers } from './api.js';
import { Assets } from './assets.js';
import { clearedCookie, DashboardAuth, type Access } from './auth.js';

export interface DashboardOptions {
  /** The pool to read and act through (a getter: the worker's pool exists only once it started). */
  pool: () => pg.Pool;
  schema: string;
  /** http.dashboardToken; empty: read-only. */
  token: string;
  /** worker.rescueAfterMs: a worker silent longer is shown as dead. */
  rescueAfterMs: number;
  /** config health.*: what the health page marks as a warning. */
  health: HealthThresholds;
  /** config cron: the recurring jobs whose ticks the recurring page shows. */
  cron: CronEntry[];
  log: Logger;
}

export type DashboardHandler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

const BODY_MAX = 64 * 1024;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function createDashboard(opts: DashboardOptions): DashboardHandler {
  const assets = new Assets();
  const auth = new DashboardAuth(opts.token);
  const { schema } = opts;

  const headers = (type: string, extra: Record<string, string> = {}) => ({
    'content-type': type,
    'cache-control': 'no-store',
    'content-security-policy': assets.csp,
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    ...extra,
  });
  const json = (res: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, headers('application/json; charset=utf-8', { 'content-length': String(Buffer.byteLength(text)) }));
    res.end(text);
  };
  const html = (res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}) => {
    res.writeHead(status, headers('text/html; charset=utf-8', { 'content-length': String(Buffer.byteLength(text)), ...extra }));
    res.end(text);
  };

  const reads: Record<string, (url: URL) => Promise<unknown>> = {
    overview: () => readOverview(opts.pool(), schema, opts.rescueAfterMs),
    jobs: (url) => {
      const p = Object.fromEntries(url.searchParams);
      const limit = p.limit === undefined ? 50 : Number(p.limit);
      return pageJobs(opts.pool(), schema, parseFilter(p), p.before || undefined, limit);
    },
    workers: async () => {
      const pool = opts.pool();
      return readWorkers(pool, schema, opts.rescueAfterMs, await readBudget(pool, schema, { rescueAfterMs: opts.rescueAfterMs }));
    },
    budget: () => readBudget(opts.pool(), schema, { rescueAfterMs: opts.rescueAfterMs }),
    health: () => readHealth(opts.pool(), schema, opts.health),
    cron: () => listCron(opts.pool(), schema, opts.cron),
  };

  async function api(req: IncomingMessage, res: ServerResponse, access: Access, url: URL, route: string): Promise<void> {
    if (req.method === 'GET' || req.method === 'HEAD') {
      if (route === 'session') {
        return json(res, 200, { readOnly: auth.readOnly, csrf: access.kind === 'cookie' ? auth.csrf : null, loggedIn: access.kind === 'cookie' });
      }
      const job = /^jobs\/([^/]+)$/.exec(route);
      if (job) return json(res, 200, await readJob(opts.pool(), schema, decodeURIComponent(job[1]!)));
      const read = Object.hasOwn(reads, route) ? reads[route] : undefined;
      if (!read) throw new HttpError(404, `no such API: ${route}`);
      return json(res, 200, await read(url));
    }
    if (req.method !== 'POST') throw new HttpError(405, 'method not allowed');
    // actions: never without a token, never from another site
    if (access.kind === 'read-only') throw new HttpError(403, 'the dashboard is read-only: set http.dashboardToken (SLUICE_DASHBOARD_TOKEN) to allow actions');
    if (access.kind === 'cookie' && !auth.csrfValid(req)) throw new HttpError(403, `missing or wrong ${'x-sluice-csrf'} header (CSRF protection)`);
    if (!/^application\/json\b/i.test(req.headers['content-type'] ?? '')) throw new HttpError(415, 'actions take a JSON body (content-type: application/json)');
    const body = await readJson(req);
    const bulk = route === 'jobs/bulk';
    if (bulk) {
      const action = parseAction(String(body.action ?? ''));
      const filter = parseFilter((body.filter ?? {}) as Record<string, unknown>);
      const before = typeof body.before === 'string' && body.before ? body.before : undefined;
      const result = await bulkJobAction(opts.pool(), schema, action, filter, before);
      opts.log.info({ action, filter, ...result }, `dashboard: bulk ${action}`);
      return json(res, 200, result);
    }
    const m = /^jobs\/([^/]+)\/([a-z-]+)$/.exec(route);
    if (m) {
      const action = parseAction(m[2]!);
      const change = await applyJobAction(opts.pool(), schema, action, decodeURIComponent(m[1]!));
      opts.log.info({ action, jobId: change.id }, `dashboard: ${action} job ${change.id}`);
      return json(res, 200, change);
    }
    const queue = /^queues\/([^/]+)\/([a-z-]+)$/.exec(route);
    if (queue) {
      const done = await applyQueueAction(opts.pool(), schema, decodeURIComponent(queue[1]!), queue[2]!, body);
      opts.log.info({ ...done, limits: done.action === 'limits' ? body : undefined }, `dashboard: ${done.action} queue ${done.queue}`);
      return json(res, 200, done);
    }
    throw new HttpError(404, `no such action: ${route}`);
  }

  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const pathname = url.pathname;
    if (pathname === '/dashboard') {
      res.writeHead(308, { location: '/dashboard/' + url.search });
      res.end();
      return;
    }
    const sub = pathname.slice('/dashboard/'.length);
    try {
      if (sub.startsWith('assets/')) {
        const a = assets.get(sub.slice('assets/'.length));
        if (!a || (req.method !== 'GET' && req.method !== 'HEAD')) throw new HttpError(404, 'not found');
        res.writeHead(200, { ...headers(a.type), 'cache-control': 'no-cache', 'content-length': String(a.body.length) });
        res.end(req.method === 'HEAD' ? undefined : a.body);
        return;
      }
      if (sub === 'login' && req.method === 'POST') {
        if (auth.readOnly) throw new HttpError(404, 'no token is configured: nothing to log in to');
        if (req.headers['sec-fetch-site'] === 'cross-site') throw new HttpError(403, 'cross-site login refused');
        const form = new URLSearchParams(await readBody(req));
        const secure = req.headers['x-forwarded-proto'] === 'https';
        if (!auth.login(form.get('token') ?? '')) return html(res, 401, assets.loginPage(true));
        res.writeHead(303, { location: './', 'set-cookie': auth.sessionCookie(secure), 'cache-control': 'no-store' });
        res.end();
        return;
      }
      if (sub === 'logout' && req.method === 'POST') {
        res.writeHead(303, { location: './', 'set-cookie': clearedCookie, 'cache-control': 'no-store' });
        res.end();
        return;
      }
      const access = auth.access(req);
      if (sub === '' && (req.method === 'GET' || req.method === 'HEAD')) {
        return access.kind === 'denied' ? html(res, 401, assets.loginPage(access.reason === 'wrong')) : html(res, 200, assets.page());
      }
      if (sub.startsWith('api/')) {
        if (access.kind === 'denied') throw new HttpError(401, access.reason === 'wrong' ? 'wrong dashboard token' : 'the dashboard needs its token: log in, or send Authorization: Bearer <token>');
        return await api(req, res, access, url, sub.slice('api/'.length));
      }
      throw new HttpError(404, 'not found');
    } catch (err) {
      const status =
        err instanceof HttpError ? err.status
        : err instanceof DashboardInputError || err instanceof RangeError ? 400
        : err instanceof JobNotFoundError ? 404
        : err instanceof JobStateError ? 409
        : (err as { code?: string }).code === '22023' ? 400
        : err instanceof SluiceError && err.code === 'worker_state' ? 503
        : 500;
      const message = redact((err as Error).message ?? String(err));
      if (status === 500) opts.log.warn({ err: message, path: pathname }, 'dashboard request failed');
      if (status === 401 && !sub.startsWith('api/')) return html(res, 401, assets.loginPage(false), { 'www-authenticate': 'Bearer' });
      json(res, status, { error: message });
    }
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > BODY_MAX) throw new HttpError(413, `request body over ${BODY_MAX} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const text = await readBody(req);
  if (!text) return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new HttpError(400, 'the body is not valid JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new HttpError(400, 'the body must be a JSON object');
  return v as Record<string, unknown>;
}
