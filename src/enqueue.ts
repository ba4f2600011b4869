// The producer API: addJob and addJobs, thin over the SQL functions add_job and add_jobs so that
// TypeScript and any other client enqueue exactly the same way.
import { context, trace } from '@opentelemetry/api';
import { assertIdentifier } from './db/sql.js';
import { isMissingSchema } from './db/errors.js';
import { loadQueries } from './db/queries.js';
import type { Queryable } from './db/statement.js';
import { InvalidJobError } from './errors.js';
import { activeTracer, formatTraceparent, inSpan, parseTraceparent, startProducerSpan } from './observe/tracing.js';

export interface JobSpec {
  task: string;
  /** A JSON object; it is handed to the handler as its first argument. */
  payload?: Record<string, unknown>;
  queue?: string;
  /** When the job may start; now when omitted. */
  runAt?: Date | string;
  /** Lower runs first; 0 or more. */
  priority?: number;
  maxAttempts?: number;
  /** At most one unfinished job per key and producer login: adding a duplicate returns the holder's id. */
  jobKey?: string;
  /**
   * Groups jobs for the queue's key_concurrency (sluice.set_queue_limits): at most that many
   * jobs with the same key run at once, across all workers. A customer id, say.
   */
  concurrencyKey?: string;
  /**
   * W3C trace context the job's run links to (`00-<trace id>-<span id>-<flags>`). When omitted,
   * the producer span's (with an OpenTelemetry SDK registered) or the active context's.
   */
  traceparent?: string;
}

/** The same limits as the SQL functions (sql/migrations/0008, 0009). */
export const MAX_JOBS_PER_CALL = 10_000;
export const MAX_JOB_KEY_BYTES = 1024;
export const MAX_CONCURRENCY_KEY_BYTES = 255;

/** Enqueues one job; resolves to its id (or the id of the unfinished job holding its key). */
export async function addJob(db: Queryable, job: JobSpec, schema = 'sluice'): Promise<string> {
  const row = toRow(job, undefined);
  assertIdentifier(schema);
  const tracer = activeTracer();
  if (!tracer) {
    row.traceparent ??= activeTraceparent();
    return insertJob(db, row, schema);
  }
  const span = startProducerSpan(tracer, 'sluice.addJob', { 'messaging.destination.name': row.queue ?? 'default', 'sluice.task': row.task });
  row.traceparent ??= formatTraceparent(span.spanContext());
  return inSpan(span, async () => {
    const id = await insertJob(db, row, schema);
    span.setAttribute('messaging.message.id', id);
    return id;
  });
}

async function insertJob(db: Queryable, row: Row, schema: string): Promise<string> {
  const res = await translate(() =>
    loadQueries(schema).add_job.run(db, {
      task: row.task,
      payload: JSON.stringify(row.payload),
      queue: row.queue,
      runAt: row.run_at,
      priority: row.priority,
      maxAttempts: row.max_attempts,
      jobKey: row.job_key,
      concurrencyKey: row.concurrency_key,
      traceparent: row.traceparent,
    }),
  );
  return String(res.rows[0]!.id);
}

/** The traceparent of the active span context, when there is a valid one (no SDK needed). */
function activeTraceparent(): string | null {
  const sc = trace.getSpanContext(context.active());
  return sc && trace.isSpanContextValid(sc) ? formatTraceparent(sc) : null;
}

/** Enqueues many jobs in one round trip; ids come back in input order. */
export async function addJobs(db: Queryable, jobs: JobSpec[], schema = 'sluice'): Promise<string[]> {
  if (!Array.isArray(jobs)) throw new InvalidJobError('addJobs expects an array of jobs');
  if (jobs.length > MAX_JOBS_PER_CALL) {
    throw new InvalidJobError(`addJobs takes at most ${MAX_JOBS_PER_CALL} jobs per call, got ${jobs.length}: split the batch`);
  }
  assertIdentifier(schema);
  if (jobs.length === 0) return [];
  const rows = jobs.map((j, i) => toRow(j, i + 1));
  const insert = async (traceparent: string | null) => {
    if (traceparent) for (const r of rows) r.traceparent ??= traceparent;
    const res = await translate(() => loadQueries(schema).add_jobs.run(db, { jobs: JSON.stringify(rows) }));
    return res.rows[0]!.ids.map(String);
  };
  const tracer = activeTracer();
  if (!tracer) return insert(activeTraceparent());
  const span = startProducerSpan(tracer, 'sluice.addJobs', { 'messaging.batch.message_count': rows.length });
  return inSpan(span, () => insert(formatTraceparent(span.spanContext())));
}

interface Row {
  task: string;
  payload: Record<string, unknown>;
  queue: string | null;
  run_at: string | null;
  priority: number | null;
  max_attempts: number | null;
  job_key: string | null;
  concurrency_key: string | null;
  traceparent: string | null;
}

function toRow(job: JobSpec, position: number | undefined): Row {
  const at = position === undefined ? '' : ` (job ${position} of the batch)`;
  const fail = (msg: string): never => {
    throw new InvalidJobError(`${msg}${at}`);
  };
  if (job === null || typeof job !== 'object') fail('a job must be an object with at least a task');
  if (typeof job.task !== 'string' || job.task.trim() === '') fail('task must be a non-empty name');
  if (job.task.length > 128) fail('task name is longer than 128 characters');
  const payload = job.payload ?? {};
  if (typeof payload !== 'object' || Array.isArray(payload)) {
    fail(`payload must be a JSON object, got ${Array.isArray(payload) ? 'an array' : typeof payload}`);
  }
  const problem = jsonProblem(payload, 'payload', new Set());
  if (problem) fail(problem);
  if (job.queue !== undefined && (typeof job.queue !== 'string' || job.queue.trim() === '' || job.queue.length > 128)) {
    fail('queue must be a non-blank name of at most 128 characters');
  }
  let runAt: string | null = null;
  if (job.runAt !== undefined) {
    const d = job.runAt instanceof Date ? job.runAt : new Date(job.runAt);
    if (Number.isNaN(d.getTime())) fail(`runAt is not a valid date: ${String(job.runAt)}`);
    runAt = d.toISOString();
  }
  if (job.priority !== undefined && (!Number.isInteger(job.priority) || job.priority < 0 || job.priority > 2 ** 31 - 1)) {
    fail(`priority must be an integer 0 or more (lower runs first), got ${String(job.priority)}`);
  }
  if (job.maxAttempts !== undefined && (!Number.isInteger(job.maxAttempts) || job.maxAttempts < 1 || job.maxAttempts > 2 ** 31 - 1)) {
    fail(`maxAttempts must be an integer of at least 1, got ${String(job.maxAttempts)}`);
  }
  if (job.jobKey !== undefined && job.jobKey !== null) {
    if (typeof job.jobKey !== 'string' || job.jobKey === '') fail('jobKey must be a non-empty string (or omitted for none)');
    const bytes = Buffer.byteLength(job.jobKey);
    if (bytes > MAX_JOB_KEY_BYTES) fail(`jobKey is ${bytes} bytes; at most ${MAX_JOB_KEY_BYTES} are accepted`);
  }
  if (job.concurrencyKey !== undefined && job.concurrencyKey !== null) {
    if (typeof job.concurrencyKey !== 'string' || job.concurrencyKey === '') fail('concurrencyKey must be a non-empty string (or omitted for none)');
    const bytes = Buffer.byteLength(job.concurrencyKey);
    if (bytes > MAX_CONCURRENCY_KEY_BYTES) fail(`concurrencyKey is ${bytes} bytes; at most ${MAX_CONCURRENCY_KEY_BYTES} are accepted`);
  }
  if (job.traceparent !== undefined && job.traceparent !== null && !parseTraceparent(job.traceparent)) {
    fail(`traceparent must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, ids not all zero), got ${JSON.stringify(job.traceparent)}`);
  }
  return {
    task: job.task,
    payload,
    queue: job.queue ?? null,
    run_at: runAt,
    priority: job.priority ?? null,
    max_attempts: job.maxAttempts ?? null,
    job_key: job.jobKey ?? null,
    concurrency_key: job.concurrencyKey ?? null,
    traceparent: job.traceparent ?? null,
  };
}

/** Why a value would not survive JSON unchanged, or undefined when it would. */
function jsonProblem(value: unknown, where: string, seen: Set<object>): string | undefined {
  switch (typeof value) {
    case 'string':
      return value.includes('\u0000') ? `${where} contains a NUL character, which PostgreSQL jsonb cannot store` : undefined;
    case 'number':
      return Number.isFinite(value) ? undefined : `${where} is ${value}, which JSON cannot represent`;
    case 'boolean':
      return undefined;
    case 'bigint':
    case 'function':
    case 'symbol':
      return `${where} is a ${typeof value}, which is not JSON`;
    case 'undefined':
      return `${where} is undefined, which is not JSON`;
  }
  if (value === null) return undefined;
  const obj = value as object;
  if (typeof (obj as { toJSON?: unknown }).toJSON === 'function') return undefined;
  if (seen.has(obj)) return `${where} refers back to itself (a circular structure is not JSON)`;
  seen.add(obj);
  try {
    if (Array.isArray(obj)) {
      for (let i = 0; i < obj.length; i++) {
        const p = jsonProblem(obj[i], `${where}[${i}]`, seen);
        if (p) return p;
      }
      return undefined;
    }
    const proto = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) {
      return `${where} is a ${proto?.constructor?.name ?? 'non-plain'} object, not plain JSON`;
    }
    for (const [k, v] of Object.entries(obj)) {
      if (v === undefined) continue;
      const p = jsonProblem(v, `${where}.${k}`, seen);
      if (p) return p;
    }
    return undefined;
  } finally {
    seen.delete(obj);
  }
}

async function translate<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const e = err as { code?: string; message: string };
    if (e.code === '22023' && e.message.startsWith('sluice: ')) throw new InvalidJobError(e.message.slice(8));
    if (isMissingSchema(e)) {
      throw new Error(`sluice is not installed in this database (${e.message}): run "sluice migrate"`);
    }
    throw err;
  }
}
