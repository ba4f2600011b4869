// OpenTelemetry: spans through the API with the SDK's in-memory exporter, trace context carried by
// the job from producer (TypeScript or SQL) to the run; and queue_depth() for autoscalers.
import { expect } from 'chai';
import pg from 'pg';
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { addJob, addJobs } from '../src/enqueue.js';
import { InvalidJobError } from '../src/errors.js';
import { snooze } from '../src/snooze.js';
import { activeTracer } from '../src/observe/tracing.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { migrated, startWorker, statusCounts, stopWorkers } from './support/worker.js';

async function traceparentOf(pool: pg.Pool, id: string): Promise<string | null> {
  return (await pool.query('SELECT traceparent FROM sluice.jobs WHERE id = $1', [id])).rows[0].traceparent;
}

describe('tracing', () => {
  let pool: pg.Pool;
  let url: string;

  before(async () => {
    url = await createTestDatabase();
    pool = await migrated(url);
  });
  after(() => pool.end());
  afterEach(() => stopWorkers());

  describe('without an OpenTelemetry SDK', () => {
    it('makes no spans and stores no trace context', async () => {
      expect(activeTracer()).to.equal(undefined);
      const id = await addJob(pool, { task: 'plain' });
      expect(await traceparentOf(pool, id)).to.equal(null);
      const [a] = await addJobs(pool, [{ task: 'plain' }]);
      expect(await traceparentOf(pool, a!)).to.equal(null);
    });

    it('keeps a traceparent given explicitly, from TypeScript and from SQL', async () => {
      const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
      expect(await traceparentOf(pool, await addJob(pool, { task: 'plain', traceparent: tp }))).to.equal(tp);
      const id = (await pool.query(`SELECT sluice.add_job('plain', '{}', traceparent => $1) AS id`, [tp])).rows[0].id;
      expect(await traceparentOf(pool, id)).to.equal(tp);
      const [b] = (await pool.query(`SELECT sluice.add_jobs($1::jsonb) AS ids`, [JSON.stringify([{ task: 'plain', traceparent: tp }])])).rows[0].ids;
      expect(await traceparentOf(pool, b)).to.equal(tp);
    });

    it("takes the active context's trace (propagated into the process, no tracer registered)", async () => {
      context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
      try {
        const incoming = { traceId: '1af7651916cd43dd8448eb211c80319c', spanId: 'c7ad6b7169203331', traceFlags: 1 };
        const id = await context.with(trace.setSpanContext(context.active(), incoming), () => addJob(pool, { task: 'plain' }));
        expect(await traceparentOf(pool, id)).to.equal(`00-${incoming.traceId}-${incoming.spanId}-01`);
        expect(activeTracer()).to.equal(undefined);
      } finally {
        context.disable();
      }
    });

    it('refuses a malformed traceparent, naming it (and the job of a batch)', async () => {
      const bad = '01-xyz';
      let err: unknown;
      await addJob(pool, { task: 'plain', traceparent: bad }).catch((e) => (err = e));
      expect(err).to.be.instanceOf(InvalidJobError);
      expect((err as Error).message).to.contain('traceparent must be a W3C traceparent').and.contain('"01-xyz"');
      const sql = await pool.query(`SELECT sluice.add_job('plain', '{}', traceparent => $1)`, [bad]).catch((e: Error) => e);
      expect((sql as Error).message).to.match(/^sluice: traceparent must be a W3C traceparent .*got 01-xyz$/);
      const zeros = `00-${'0'.repeat(32)}-b7ad6b7169203331-01`;
      const batch = await pool
        .query(`SELECT sluice.add_jobs($1::jsonb)`, [JSON.stringify([{ task: 'plain' }, { task: 'plain', traceparent: zeros }])])
        .catch((e: Error) => e);
      expect((batch as Error).message).to.match(/traceparent must be .* \(job 2 of the batch\)$/);
      expect((await pool.query(`SELECT count(*)::int AS n FROM sluice.jobs WHERE traceparent = $1`, [zeros])).rows[0].n).to.equal(0);
    });
  });

  describe('with the SDK registered', () => {
    const exporter = new InMemorySpanExporter();
    let provider: BasicTracerProvider;

    before(() => {
      context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
      provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
      trace.setGlobalTracerProvider(provider);
    });
    after(async () => {
      await provider.shutdown();
      trace.disable();
      context.disable();
    });
    beforeEach(() => exporter.reset());

    const spans = (name: string) => exporter.getFinishedSpans().filter((s) => s.name === name);
    const idOf = (s: ReadableSpan) => s.spanContext().spanId;

    it('addJob makes a producer span in the active trace and stores its context on the job', async () => {
      const app = trace.getTracer('app');
      const { id, parent } = await app.startActiveSpan('POST /signup', async (span) => {
        const id = await addJob(pool, { task: 'welcome', queue: 'mail' });
        span.end();
        return { id, parent: span.spanContext() };
      });
      const [producer] = spans('sluice.addJob');
      expect(producer, 'a sluice.addJob span').to.not.equal(undefined);
      expect(producer!.kind).to.equal(SpanKind.PRODUCER);
      expect(producer!.spanContext().traceId).to.equal(parent.traceId);
      expect(producer!.parentSpanContext?.spanId).to.equal(parent.spanId);
      expect(producer!.attributes).to.include({ 'messaging.destination.name': 'mail', 'sluice.task': 'welcome', 'messaging.message.id': id });
      expect(await traceparentOf(pool, id)).to.equal(`00-${parent.traceId}-${idOf(producer!)}-01`);
    });

    it('addJobs makes one producer span for the batch; a job with its own traceparent keeps it', async () => {
      const own = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
      const [a, b] = await addJobs(pool, [{ task: 'x' }, { task: 'y', traceparent: own }]);
      const [batch] = spans('sluice.addJobs');
      expect(batch!.kind).to.equal(SpanKind.PRODUCER);
      expect(batch!.attributes['messaging.batch.message_count']).to.equal(2);
      expect(await traceparentOf(pool, a!)).to.equal(`00-${batch!.spanContext().traceId}-${idOf(batch!)}-01`);
      expect(await traceparentOf(pool, b!)).to.equal(own);
    });

    it('records a failed add on the producer span', async () => {
      // the database refuses: no sluice in that schema
      await addJob(pool, { task: 'x' }, 'nowhere').catch(() => undefined);
      await addJobs(pool, [{ task: 'x' }], 'nowhere').catch(() => undefined);
      for (const name of ['sluice.addJob', 'sluice.addJobs']) {
        expect(spans(name), name).to.have.length(1);
        expect(spans(name)[0]!.status.code).to.equal(SpanStatusCode.ERROR);
        expect(spans(name)[0]!.status.message).to.match(/^sluice is not installed in this database/);
        expect(spans(name)[0]!.events.map((e) => e.name)).to.include('exception');
      }
    });

    it("a job's run is a consumer span linked to its producer, with the handler's spans inside and the completion write as a child; a failed attempt is recorded", async () => {
      const producerTrace = '4bf92f3577b34da6a3ce929d0e0e4736';
      const producerSpan = '00f067aa0ba902b7';
      // a producer in another language passes its trace context through SQL
      const id = String(
        (await pool.query(`SELECT sluice.add_job('flaky', '{}', 'traced', traceparent => $1) AS id`, [`00-${producerTrace}-${producerSpan}-01`])).rows[0].id,
      );
      let calls = 0;
      await startWorker(
        url,
        {
          flaky: async () => {
            await trace.getTracer('app').startActiveSpan('send email', async (s) => s.end());
            if (++calls === 1) throw new Error('smtp refused');
          },
        },
        { worker: { queues: ['traced'], retryBaseMs: 1, retryMaxMs: 1 } },
      );
      await waitFor('the job to complete on its second attempt', async () => (await statusCounts(pool, `id = ${id}`)).completed === 1);
      await waitFor('both runs to end', () => spans('sluice.run').length === 2 && spans('sluice.complete').length === 2);

      const runs = spans('sluice.run').sort((x, y) => Number(x.attributes['sluice.job.attempt']) - Number(y.attributes['sluice.job.attempt']));
      for (const [i, run] of runs.entries()) {
        expect(run.kind).to.equal(SpanKind.CONSUMER);
        expect(run.attributes).to.include({ 'sluice.task': 'flaky', 'sluice.queue': 'traced', 'sluice.job.id': id, 'sluice.job.attempt': i + 1 });
        expect(run.links).to.have.length(1);
        expect(run.links[0]!.context).to.include({ traceId: producerTrace, spanId: producerSpan });
        expect(run.parentSpanContext, 'a run starts a trace of its own').to.equal(undefined);
      }
      const [failed, ok] = runs;
      expect(failed!.status.code).to.equal(SpanStatusCode.ERROR);
      expect(failed!.status.message).to.equal('Error: smtp refused');
      expect(failed!.events.find((e) => e.name === 'exception')?.attributes).to.include({ 'exception.message': 'Error: smtp refused' });
      expect(failed!.attributes).to.include({ 'sluice.outcome': 'failed', 'sluice.retry': true });
      expect(ok!.status.code).to.not.equal(SpanStatusCode.ERROR);
      expect(ok!.attributes['sluice.outcome']).to.equal('completed');

      for (const run of runs) {
        const children = exporter.getFinishedSpans().filter((s) => s.parentSpanContext?.spanId === idOf(run));
        expect(children.map((s) => s.name).sort()).to.deep.equal(['send email', 'sluice.complete']);
        expect(children.every((s) => s.spanContext().traceId === run.spanContext().traceId)).to.equal(true);
      }
      expect(spans('sluice.complete').map((s) => s.attributes['sluice.outcome']).sort()).to.deep.equal(['completed', 'failed']);
      const claims = spans('sluice.claim').filter((s) => Number(s.attributes['messaging.batch.message_count']) > 0);
      expect(claims).to.have.length(2);
      expect(claims[0]!.attributes['sluice.queues']).to.deep.equal(['traced']);
    });

    it('a snoozed run records its write as a completion span with the outcome snoozed', async () => {
      const id = await addJob(pool, { task: 'later', queue: 'snoozing' });
      let runs = 0;
      await startWorker(url, { later: async () => (++runs === 1 ? snooze(1) : undefined) }, { worker: { queues: ['snoozing'] } });
      await waitFor('the job to complete after its snooze', async () => (await statusCounts(pool, `id = ${id}`)).completed === 1);
      await waitFor('both runs to end', () => spans('sluice.run').filter((s) => s.attributes['sluice.job.id'] === id).length === 2);
      const runIds = spans('sluice.run').filter((s) => s.attributes['sluice.job.id'] === id).map((s) => s.spanContext().spanId);
      const writes = spans('sluice.complete').filter((s) => runIds.includes(s.parentSpanContext?.spanId ?? ''));
      expect(writes.map((s) => s.attributes['sluice.outcome']).sort()).to.deep.equal(['completed', 'snoozed']);
    });

    it('a job of a queue with limits (claimed by claim_controlled_jobs) links to its producer too', async () => {
      await pool.query(`SELECT sluice.set_queue_limits('limited', concurrency => 2)`);
      const tp = '00-5bf92f3577b34da6a3ce929d0e0e4736-10f067aa0ba902b7-01';
      const id = await addJob(pool, { task: 'quick', queue: 'limited', traceparent: tp });
      await startWorker(url, { quick: async () => undefined }, { worker: { queues: ['limited'] } });
      await waitFor('the job to complete', async () => (await statusCounts(pool, `id = ${id}`)).completed === 1);
      await waitFor('its run span to end', () => spans('sluice.run').some((s) => s.attributes['sluice.job.id'] === id));
      const run = spans('sluice.run').find((s) => s.attributes['sluice.job.id'] === id)!;
      expect(run.links.map((l) => l.context.spanId)).to.deep.equal(['10f067aa0ba902b7']);
    });
  });
});

describe('sluice.queue_depth()', () => {
  let pool: pg.Pool;
  before(async () => {
    pool = await migrated(await createTestDatabase());
  });
  after(() => pool.end());

  it('counts runnable jobs of a queue, or of all queues: not scheduled, running or finished ones', async () => {
    const depth = async (queue?: string) =>
      Number((await pool.query(queue === undefined ? 'SELECT sluice.queue_depth() AS n' : 'SELECT sluice.queue_depth($1) AS n', queue === undefined ? [] : [queue])).rows[0].n);
    expect(await depth()).to.equal(0);
    expect(await depth('default')).to.equal(0);
    await pool.query(`SELECT sluice.add_job('t') FROM generate_series(1, 3)`);
    await pool.query(`SELECT sluice.add_job('t', '{}', 'other')`);
    await pool.query(`SELECT sluice.add_job('t', '{}', 'default', now() + interval '1 hour')`);
    await pool.query(`UPDATE sluice.jobs SET status = 'running' WHERE id = (SELECT min(id) FROM sluice.jobs)`);
    await pool.query(`INSERT INTO sluice.jobs (task, status, finished_at) VALUES ('t', 'completed', now())`);
    expect(await depth('default')).to.equal(2);
    expect(await depth('other')).to.equal(1);
    expect(await depth('nowhere')).to.equal(0);
    expect(await depth()).to.equal(3);
    // a paused queue's jobs wait for no worker: more replicas would not help
    await pool.query(`SELECT sluice.pause_queue('other')`);
    expect(await depth('other')).to.equal(0);
    expect(await depth()).to.equal(2);
    await pool.query(`SELECT sluice.resume_queue('other')`);
    expect(await depth()).to.equal(3);
  });
});
