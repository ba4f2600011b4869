// What a database URL names: one host, or several in libpq's form
// (`postgres://u@h1:5432,h2:5432/db?target_session_attrs=read-write`). node-postgres connects to
// one host only (its issue 1470), so sluice splits such a URL into one single-host URL per host and
// tries them in order itself (db/primary.ts). WHATWG `new URL()` refuses a comma-separated host
// list, hence the parsing by hand of the authority part.

export interface HostPort {
  host: string;
  port: number;
}

export interface DatabaseTarget {
  hosts: HostPort[];
  /**
   * True when a connection is kept only on a writable primary: target_session_attrs=read-write
   * (or primary), and by default whenever the URL names several hosts, since every connection
   * sluice opens writes.
   */
  requirePrimary: boolean;
  /** A single-host URL for hosts[i], with everything else of the original URL. */
  urlFor(i: number): string;
  /** host:port of hosts[i], for log lines and /readyz. */
  label(i: number): string;
}

const SESSION_ATTRS_PRIMARY = new Set(['read-write', 'primary']);

/** Parses a postgres:// URL with one or several hosts; throws an Error naming what is wrong. */
export function parseDatabaseUrl(url: string): DatabaseTarget {
  const m = /^(postgres(?:ql)?:\/\/)([^/?#]*)(.*)$/s.exec(url);
  if (!m) throw new Error('must be a postgres:// or postgresql:// URL');
  const [, scheme, authority, rest] = m as unknown as [string, string, string, string];
  const at = authority.lastIndexOf('@');
  const userinfo = at >= 0 ? authority.slice(0, at + 1) : '';
  const hostList = authority.slice(at + 1);
  const hosts = hostList === '' ? [] : hostList.split(',').map(parseHostPort);
  if (hosts.length === 0) throw new Error('names no host');

  let query: URLSearchParams;
  let path: string;
  try {
    const probe = new URL(`${scheme}${userinfo}placeholder${rest}`);
    query = probe.searchParams;
    path = probe.pathname;
  } catch {
    throw new Error('is not a valid URL');
  }
  const attrs = query.get('target_session_attrs');
  if (attrs !== null && attrs !== 'any' && !SESSION_ATTRS_PRIMARY.has(attrs)) {
    throw new Error(`has target_session_attrs=${attrs}: sluice writes on every connection, so only read-write, primary or any can work`);
  }
  const requirePrimary = attrs === null ? hosts.length > 1 : SESSION_ATTRS_PRIMARY.has(attrs);
  // node-postgres would pass an unknown parameter on as a startup parameter: strip it
  query.delete('target_session_attrs');
  const search = query.toString();
  const label = (i: number) => formatHostPort(hosts[i]!);
  return {
    hosts,
    requirePrimary,
    label,
    urlFor: (i) => `${scheme}${userinfo}${label(i)}${path}${search ? `?${search}` : ''}`,
  };
}

function parseHostPort(part: string): HostPort {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d*))?$/.exec(part.trim());
  if (!m) throw new Error(`has an invalid host ${JSON.stringify(part)} (host or host:port, comma-separated)`);
  const port = m[2] ? Number(m[2]) : 5432;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`has an invalid port in ${JSON.stringify(part)}`);
  return { host: m[1]!, port };
}

function formatHostPort(h: HostPort): string {
  return `${h.host}:${h.port}`;
}

/**
 * The target when sluice must choose among hosts or check for a primary itself (several hosts,
 * or target_session_attrs=read-write); undefined for a plain single-host URL, which is passed to
 * node-postgres as it is (a socket directory, say, keeps working as before).
 */
export function locatedTarget(url: string): DatabaseTarget | undefined {
  const authority = /^postgres(?:ql)?:\/\/([^/?#]*)/.exec(url)?.[1] ?? '';
  if (!authority.slice(authority.lastIndexOf('@') + 1).includes(',') && !/[?&]target_session_attrs=/.test(url)) return undefined;
  const target = parseDatabaseUrl(url);
  return target.hosts.length > 1 || target.requirePrimary ? target : undefined;
}
