// Every error sluice raises on purpose carries a stable `code`, so callers (the CLI's exit codes,
// HTTP answers, users' own handling) decide by code rather than by class or message.

export type ErrorCode =
  /** A configuration value, file or combination is not allowed. */
  | 'config_invalid'
  /** A job given to add_job/addJob is not valid. */
  | 'invalid_job'
  | 'job_not_found'
  /** The job exists but is in a state the operation does not apply to. */
  | 'job_state'
  /** sluice is not installed in the schema, or its schema is older or newer than this code. */
  | 'schema_version'
  /** A command-line argument or an API argument is wrong. */
  | 'usage'
  /** The database, a port or something else sluice needs could not be used. */
  | 'unavailable'
  /** The worker is in a state the call does not apply to (not started, stopped while starting). */
  | 'worker_state'
  /** The connection budget does not fit and database.strictBudget is on. */
  | 'budget'
  /** A job's run was aborted (timeout, cancellation, loss of the job, shutdown). */
  | 'job_aborted'
  /** Thrown by a handler: fail the job for good. */
  | 'permanent';

export class SluiceError extends Error {
  override name = 'SluiceError';
  constructor(readonly code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export function errorCode(err: unknown): ErrorCode | undefined {
  return err instanceof SluiceError ? err.code : undefined;
}

export class ConfigError extends SluiceError {
  override name = 'ConfigError';
  constructor(message: string) {
    super('config_invalid', message);
  }
}

export class InvalidJobError extends SluiceError {
  override name = 'InvalidJobError';
  constructor(message: string) {
    super('invalid_job', message);
  }
}

export class JobNotFoundError extends SluiceError {
  override name = 'JobNotFoundError';
  constructor(readonly id: string) {
    super('job_not_found', `job ${id} not found`);
  }
}

export class JobStateError extends SluiceError {
  override name = 'JobStateError';
  constructor(readonly id: string, readonly status: string, message: string) {
    super('job_state', message);
  }
}

export type AbortCause = 'timeout' | 'cancelled' | 'lost' | 'shutdown';

/** The reason an aborted job's signal carries. */
export class JobAbortedError extends SluiceError {
  override name = 'JobAbortedError';
  constructor(readonly reason: AbortCause, message: string) {
    super('job_aborted', message);
  }
}

const PERMANENT = Symbol.for('sluice.permanent');

/**
 * Thrown by a handler to fail its job for good, without retries. Recognised by a brand rather
 * than instanceof, so it works across two copies of sluice (a task importing the package while
 * the worker runs from source); any error carrying the brand counts.
 */
export class PermanentError extends SluiceError {
  override name = 'PermanentError';
  readonly [PERMANENT] = true;
  constructor(message: string, options?: { cause?: unknown }) {
    super('permanent', message, options);
  }
}

export function isPermanent(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as Record<symbol, unknown>)[PERMANENT] === true;
}
