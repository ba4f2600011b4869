// OpenTelemetry spans through @opentelemetry/api only: the application registers an SDK (or not).
// Spans: addJob/addJobs (producer), the claim, a job's run (consumer) and its completion write.
// A job carries the W3C traceparent of the context that added it (sluice.jobs.traceparent), and
// its run span links to it. With no SDK registered nothing is made per job: activeTracer() is
// undefined and the callers skip their tracing code.
import { readFileSync } from 'node:fs';
import {
  context,
  ProxyTracerProvider,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Attributes,
  type Link,
  type Span,
  type SpanContext,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';
import type { ClaimedJob } from '../runner/claim.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** The provider the API returns while no SDK is registered (this copy of the API's no-op). */
const NOOP_PROVIDER = new ProxyTracerProvider().getDelegate();

let seenProvider: TracerProvider | undefined;
let tracer: Tracer | undefined;

/** sluice's tracer when an SDK is registered, else undefined (checked cheaply on every call: one may be registered later). */
export function activeTracer(): Tracer | undefined {
  const global = trace.getTracerProvider();
  const provider = global instanceof ProxyTracerProvider ? global.getDelegate() : global;
  if (provider !== seenProvider) {
    seenProvider = provider;
    tracer = provider === NOOP_PROVIDER ? undefined : provider.getTracer('sluice', VERSION);
  }
  return tracer;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The W3C traceparent of a span context (version 00). */
export function formatTraceparent(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/** The span context a traceparent names, or undefined when it is not a valid version-00 one. */
export function parseTraceparent(text: string | null | undefined): SpanContext | undefined {
  const m = text ? TRACEPARENT.exec(text) : null;
  if (!m || /^0+$/.test(m[1]!) || /^0+$/.test(m[2]!)) return undefined;
  return { traceId: m[1]!, spanId: m[2]!, traceFlags: parseInt(m[3]!, 16) & TraceFlags.SAMPLED, isRemote: true };
}

/** A span ended with the outcome of fn: an error is recorded on it and rethrown. */
export async function inSpan<T>(span: Span, fn: () => Promise<T>): Promise<T> {
  try {
    return await context.with(trace.setSpan(context.active(), span), fn);
  } catch (err) {
    recordError(span, err);
    throw err;
  } finally {
    span.end();
  }
}

export function recordError(span: Span, err: unknown): void {
  span.recordException(err instanceof Error ? err : String(err));
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
}

/** The producer span of addJob/addJobs, a child of the active context. */
export function startProducerSpan(t: Tracer, name: 'sluice.addJob' | 'sluice.addJobs', attributes: Attributes): Span {
  return t.startSpan(name, { kind: SpanKind.PRODUCER, attributes: { 'messaging.system': 'sluice', 'messaging.operation.type': 'send', ...attributes } });
}

/** A claim of jobs for some queues, in a span that counts what it took. */
export function traceClaim<T>(t: Tracer, queues: string[], claim: () => Promise<T>, claimedJobs: (result: T) => number): Promise<T> {
  const span = t.startSpan('sluice.claim', {
    kind: SpanKind.CLIENT,
    attributes: { 'messaging.system': 'sluice', 'messaging.operation.type': 'receive', 'sluice.queues': queues },
  });
  return inSpan(span, async () => {
    const result = await claim();
    span.setAttribute('messaging.batch.message_count', claimedJobs(result));
    return result;
  });
}

/** A job's run: a new trace, linked to the context that added the job. */
export function startRunSpan(t: Tracer, job: ClaimedJob): Span {
  const producer = parseTraceparent(job.traceparent);
  const links: Link[] | undefined = producer ? [{ context: producer }] : undefined;
  return t.startSpan(
    'sluice.run',
    {
      kind: SpanKind.CONSUMER,
      root: true,
      links,
      attributes: {
        'messaging.system': 'sluice',
        'messaging.operation.type': 'process',
        'messaging.destination.name': job.queue,
        'messaging.message.id': job.id,
        'sluice.task': job.task,
        'sluice.queue': job.queue,
        'sluice.job.id': job.id,
        'sluice.job.attempt': job.attempt,
      },
    },
    context.active(),
  );
}

/** The write of a job's outcome, a child of its run span. */
export function startCompletionSpan(t: Tracer, run: Span, outcome: string): Span {
  return t.startSpan('sluice.complete', { kind: SpanKind.CLIENT, attributes: { 'sluice.outcome': outcome } }, trace.setSpan(context.active(), run));
}

/** Runs a job's handler with its run span active, so that the handler's own spans are its children. */
export function runInSpan<T>(span: Span, fn: () => T): T {
  return context.with(trace.setSpan(context.active(), span), fn);
}

/**
 * Ends a job's run span once its outcome is written: a failed attempt is recorded on it as an
 * exception, and the write of a completion or failure gets a child span of its own.
 */
export async function traceOutcome(t: Tracer, run: Span, outcome: { kind: string; error?: string; retry?: boolean }, write: () => Promise<void>): Promise<void> {
  run.setAttribute('sluice.outcome', outcome.kind);
  if (outcome.error !== undefined) {
    const [message = outcome.error] = outcome.error.split('\n', 1);
    run.recordException({ name: 'JobError', message, stack: outcome.error });
    run.setStatus({ code: SpanStatusCode.ERROR, message });
    run.setAttribute('sluice.retry', outcome.retry ?? false);
  }
  try {
    // abandoned jobs write nothing; a completion in the handler's transaction was written by it
    if (outcome.kind !== 'abandoned' && outcome.kind !== 'completed-in-transaction') await inSpan(startCompletionSpan(t, run, outcome.kind), write);
    else await write();
  } catch (err) {
    recordError(run, err);
    throw err;
  } finally {
    run.end();
  }
}
