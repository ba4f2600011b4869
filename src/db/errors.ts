// What a database error means to sluice: a connection to throw away, a schema that is not there,
// and the form in which any error may be logged or shown.
import { redact } from '../util/redact.js';

const BROKEN = Symbol('sluice.brokenConnection');

/** Marks `original` as having left its connection unusable (`cause`: why). */
export function markConnectionBroken(original: Error, cause: Error): Error {
  Object.defineProperty(original, BROKEN, { value: cause });
  return original;
}

/**
 * True when the client must be destroyed rather than reused: the socket failed, the server ended
 * the session, a query timed out client-side (the server may still be running it), or the server
 * is read-only (25006: a demoted primary, whose every later write would fail the same way).
 */
export function isConnectionBroken(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if ((err as unknown as Record<symbol, unknown>)[BROKEN]) return true;
  const code = (err as { code?: string }).code;
  if (code && /^(08|57P0[1-3]|53300|25006)/.test(code)) return true;
  if (code && ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ENOTCONN'].includes(code)) return true;
  return /Connection terminated|Query read timeout|connection is closed|Client has encountered a connection error/i.test(
    err.message,
  );
}

/**
 * True when the error may mean the primary went away: read-only (25006), an administrator or a
 * crash shut the server down (57P01/57P02/57P03), or the connection was lost.
 */
export function isFailoverError(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code;
  if (code === '53300') return false;
  return isConnectionBroken(err);
}

/**
 * True when the error says sluice's schema, a table of it or a function of it does not exist:
 * sluice is not installed (or not fully migrated) in the schema the statement named.
 */
export function isMissingSchema(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code;
  // undefined_table, invalid_schema_name, undefined_function
  return code === '42P01' || code === '3F000' || code === '42883';
}

/** An error reduced to what is safe and useful in a log line or an answer (no credentials). */
export function errorSummary(err: unknown): { message: string; code?: string } {
  if (err instanceof Error) {
    const code = (err as { code?: string }).code;
    return { message: redact(err.message), ...(code ? { code } : {}) };
  }
  return { message: redact(String(err)) };
}
