// Who may use the dashboard. With http.dashboardToken set, every page and API call needs it: as
// `Authorization: Bearer <token>`, or as the session cookie the login form sets (derived from the
// token, HttpOnly, SameSite=Strict). Every comparison is constant-time. Without a token the
// dashboard is read-only, and it is served only on a loopback address.
import { createHmac, timingSafeEqual, createHash } from 'node:crypto';
import { isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';

export const SESSION_COOKIE = 'sluice_dashboard';
export const CSRF_HEADER = 'x-sluice-csrf';

export type Access =
  /** No token configured: pages and reads only. */
  | { kind: 'read-only' }
  /** The token, from the Authorization header (no ambient credential: no CSRF check needed). */
  | { kind: 'bearer' }
  /** The session cookie: actions also need the CSRF header. */
  | { kind: 'cookie' }
  /** A token is configured and the request has none (missing) or a wrong one. */
  | { kind: 'denied'; reason: 'missing' | 'wrong' };

/** Equal strings in time independent of where they differ (hashed first: lengths may differ). */
export function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

function derive(token: string, purpose: string): string {
  return createHmac('sha256', token).update(`sluice-dashboard ${purpose}`).digest('base64url');
}

export class DashboardAuth {
  private readonly session: string;
  readonly csrf: string;

  constructor(private readonly token: string) {
    this.session = token ? derive(token, 'session') : '';
    this.csrf = token ? derive(token, 'csrf') : '';
  }

  get readOnly(): boolean {
    return !this.token;
  }

  access(req: IncomingMessage): Access {
    if (!this.token) return { kind: 'read-only' };
    const header = req.headers.authorization;
    if (header !== undefined) {
      const m = /^Bearer\s+(.+)$/i.exec(header.trim());
      return m && sameSecret(m[1]!, this.token) ? { kind: 'bearer' } : { kind: 'denied', reason: 'wrong' };
    }
    const cookie = cookies(req)[SESSION_COOKIE];
    if (cookie === undefined) return { kind: 'denied', reason: 'missing' };
    return sameSecret(cookie, this.session) ? { kind: 'cookie' } : { kind: 'denied', reason: 'wrong' };
  }

  /** The login form's check; true sets the session cookie. */
  login(given: string): boolean {
    return Boolean(this.token) && sameSecret(given, this.token);
  }

  /** Set-Cookie for a successful login (Secure when the request came over TLS through a proxy). */
  sessionCookie(secure: boolean): string {
    return `${SESSION_COOKIE}=${this.session}; Path=/dashboard; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
  }

  /** Whether a cookie-authenticated action carries the CSRF token the page was given. */
  csrfValid(req: IncomingMessage): boolean {
    const given = req.headers[CSRF_HEADER];
    return typeof given === 'string' && Boolean(this.csrf) && sameSecret(given, this.csrf);
  }
}

export const clearedCookie = `${SESSION_COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0`;

export function cookies(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

/** Whether `host` (http.host) only accepts connections from this machine. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./.test(h);
  return false;
}

/** Why the dashboard must not be served on `host`, or null when it may be. */
export function dashboardRefusal(host: string, token: string): string | null {
  if (token || isLoopbackHost(host)) return null;
  return `the dashboard is not served on http.host ${host}: it is not a loopback address and http.dashboardToken (SLUICE_DASHBOARD_TOKEN) is empty; set a token, or bind to 127.0.0.1`;
}
