// One measurement of one system, in a process of its own so that its RSS and CPU are its own.
// Started by bench/run.ts with an IPC channel; receives one task, answers with one result.
import pg from 'pg';
import { loadAdapter } from './systems/index.js';
import {
  MONITOR_APP,
  PRODUCER_APP,
  type BenchPayload,
  type RunningWorker,
  type SystemAdapter,
  type WorkerOptions,
} from './systems/types.js';
import { MB, RssSampler, machineBusyMs, now, percentile, processCpuMs, sleep } from './measure.js';
import type {
  ChildResult,
  ChildTask,
  EnqueueResult,
  FromChild,
  LatencyResult,
  LongCheckpoint,
  LongResult,
  ToChild,
  WorkoffResult,
} from './protocol.js';

function send(msg: FromChild): void {
  process.send?.(msg);
}

let goResolve: (() => void) | undefined;
const go = new Promise<void>((r) => (goResolve = r));

process.on('disconnect', () => process.exit(1));
process.on('message', (msg: ToChild) => {
  if (msg.type === 'run') {
    run(msg.task).then(
      (result) => {
        send({ type: 'result', result });
        // the worker is stopped; leave time for the IPC message to flush
        setTimeout(() => process.exit(0), 50);
      },
      (err: unknown) => {
        // the message, then the child's stack frames (the stack's first line repeats the message)
        const frames = err instanceof Error ? (err.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l)) : [];
        send({ type: 'error', message: [err instanceof Error ? err.message : String(err), ...frames].join('\n') });
        setTimeout(() => process.exit(1), 50);
      },
    );
  } else if (msg.type === 'go') {
    goResolve?.();
  }
});

async function run(task: ChildTask): Promise<ChildResult> {
  const adapter = await loadAdapter(task.system);
  if (task.mode !== 'enqueue') await adapter.preload();
  switch (task.mode) {
    case 'enqueue':
      return enqueue(adapter, task);
    case 'workoff':
      return workoff(adapter, task);
    case 'latency':
      return latency(adapter, task);
    case 'long':
      return long(adapter, task);
  }
}

const START_TIMEOUT_MS = 60_000;

/** Starts the worker, failing clearly when it does not come up (e.g. a schema it does not accept). */
async function startWorker(adapter: SystemAdapter, url: string, opts: WorkerOptions): Promise<RunningWorker> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`the ${adapter.label} worker did not start within ${START_TIMEOUT_MS / 1000} s (see its log lines above)`)),
      START_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([adapter.startWorker(url, opts), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function monitorClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, application_name: MONITOR_APP });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function enqueue(adapter: SystemAdapter, task: Extract<ChildTask, { mode: 'enqueue' }>): Promise<EnqueueResult> {
  const producer = await adapter.producer(task.url);
  try {
    // one job first, so connecting and any lazy set-up is not in the timing
    await producer.addMany(1, 1);
    const t0 = now();
    await producer.addMany(task.jobs, task.chunk);
    const ms = now() - t0;
    return { jobs: task.jobs, ms, jobsPerSec: (task.jobs / ms) * 1000 };
  } finally {
    await producer.close();
  }
}

/**
 * Waits until `handled()` reaches `target`, then until the database shows no unfinished job.
 * Fails when nothing moves for `stallMs`.
 */
async function waitDone(
  adapter: SystemAdapter,
  db: pg.Client,
  handled: () => number,
  target: number,
  stallMs: number,
  onTick?: () => void,
): Promise<void> {
  let last = -1;
  let lastMove = now();
  while (handled() < target) {
    const h = handled();
    if (h !== last) {
      last = h;
      lastMove = now();
    } else if (now() - lastMove > stallMs) {
      throw new Error(`stalled: ${h} of ${target} jobs started, none for ${Math.round(stallMs / 1000)} s`);
    }
    onTick?.();
    await sleep(5);
  }
  const deadline = now() + stallMs;
  for (;;) {
    const left = await adapter.remaining(db);
    if (left === 0) return;
    if (now() > deadline) throw new Error(`stalled: every job started but ${left} still unfinished after ${stallMs} ms`);
    await sleep(20);
  }
}

/** The jobs are already queued (the orchestrator enqueued them), so this process only runs the worker. */
async function workoff(adapter: SystemAdapter, task: Extract<ChildTask, { mode: 'workoff' }>): Promise<WorkoffResult> {
  const db = await monitorClient(task.url);
  try {
    const queued = await adapter.remaining(db);
    if (queued !== task.jobs) throw new Error(`expected ${task.jobs} queued jobs before the work-off, found ${queued}`);

    let calls = 0;
    let first = 0;
    const rss = new RssSampler();
    globalThis.gc?.();
    const rssBaseline = process.memoryUsage().rss;
    send({ type: 'ready' });
    await go;

    rss.start();
    const cpu0 = processCpuMs();
    const machine0 = machineBusyMs();
    const t0 = now();
    const worker = await startWorker(adapter, task.url, {
      variant: task.variant,
      concurrency: task.concurrency,
      onJob: () => {
        if (calls++ === 0) first = now();
      },
    });
    await waitDone(adapter, db, () => calls, task.jobs, task.stallMs);
    const tDone = now();
    const cpu1 = processCpuMs();
    const machine1 = machineBusyMs();
    const rssPeak = rss.stop();
    const rssEnd = process.memoryUsage().rss;
    const s0 = now();
    await worker.stop();
    const stopMs = now() - s0;
    return {
      jobs: task.jobs,
      handlerCalls: calls,
      startToFirstMs: first - t0,
      firstToDoneMs: tDone - first,
      jobsPerSec: (task.jobs / (tDone - first)) * 1000,
      jobsPerSecInclStart: (task.jobs / (tDone - t0)) * 1000,
      rssBaselineMB: rssBaseline / MB,
      rssPeakMB: rssPeak / MB,
      rssEndMB: rssEnd / MB,
      workerCpuMs: cpu1 - cpu0,
      machineCpuMs: machine0 === null || machine1 === null ? null : machine1 - machine0,
      stopMs,
    };
  } finally {
    await db.end().catch(() => undefined);
  }
}

async function latency(adapter: SystemAdapter, task: Extract<ChildTask, { mode: 'latency' }>): Promise<LatencyResult> {
  const count = Math.max(1, Math.round(task.rate * task.seconds));
  // the moment COMMIT was sent (the job cannot be seen before it) and the moment it was acknowledged
  const committing = new Array<number>(count).fill(NaN);
  const committed = new Array<number>(count).fill(NaN);
  const started = new Array<number>(count).fill(NaN);
  let handled = 0;
  const producer = await adapter.producer(task.url);
  const tx = new pg.Client({ connectionString: task.url, application_name: PRODUCER_APP });
  tx.on('error', () => undefined);
  await tx.connect();
  const enqueue = async (seq: number) => {
    await tx.query('BEGIN');
    try {
      await producer.addOneIn(tx, { seq });
    } catch (err) {
      await tx.query('ROLLBACK');
      throw err;
    }
    // pg writes the query to the socket synchronously: this is when COMMIT leaves the process
    const at = now();
    await tx.query('COMMIT');
    return at;
  };
  const worker = await startWorker(adapter, task.url, {
    variant: task.variant,
    concurrency: task.concurrency,
    onJob: (payload: BenchPayload) => {
      const seq = payload.seq;
      if (typeof seq === 'number' && seq >= 0 && Number.isNaN(started[seq]!)) {
        started[seq] = now();
        handled++;
      }
    },
  });
  try {
    // let the worker settle into idle (listening, first poll done) before the first job
    await sleep(1000);
    await enqueue(-1); // warms the producer's connection and statements; not measured
    await sleep(200);
    const t0 = now();
    const every = 1000 / task.rate;
    for (let i = 0; i < count; i++) {
      const wait = t0 + i * every - now();
      if (wait > 0) await sleep(wait);
      committing[i] = await enqueue(i);
      committed[i] = now();
    }
    const sentIn = now() - t0;
    const deadline = now() + 15_000;
    while (handled < count && now() < deadline) await sleep(10);
    const latencies = started.map((s, i) => s - committing[i]!).filter((x) => Number.isFinite(x));
    return {
      sent: count,
      handled,
      rate: (count / sentIn) * 1000,
      commitRoundTripMs: percentile(committed.map((c, i) => c - committing[i]!), 50),
      latenciesMs: latencies.map((x) => Math.round(x * 1000) / 1000),
      p50: percentile(latencies, 50),
      p95: percentile(latencies, 95),
      p99: percentile(latencies, 99),
      max: percentile(latencies, 100),
    };
  } finally {
    await tx.end().catch(() => undefined);
    await producer.close().catch(() => undefined);
    await worker.stop();
  }
}

async function long(adapter: SystemAdapter, task: Extract<ChildTask, { mode: 'long' }>): Promise<LongResult> {
  const db = await monitorClient(task.url);
  let calls = 0;
  let first = 0;
  const checkpoints: LongCheckpoint[] = [];
  const rss = new RssSampler();
  rss.start(200);
  const worker = await startWorker(adapter, task.url, {
    variant: task.variant,
    concurrency: task.concurrency,
    onJob: () => {
      if (calls++ === 0) first = now();
    },
  });
  try {
    send({ type: 'ready' });
    let next = task.checkpointEvery;
    let prevAt = 0;
    let prevHandled = 0;
    const checkpoint = (final = false) => {
      if (first === 0 || (!final && calls < next) || (final && prevHandled >= calls)) return;
      const at = now() - first;
      globalThis.gc?.();
      const mem = process.memoryUsage();
      const cp: LongCheckpoint = {
        handled: calls,
        elapsedMs: at,
        intervalJobsPerSec: ((calls - prevHandled) / (at - prevAt)) * 1000,
        rssMB: mem.rss / MB,
        heapUsedMB: mem.heapUsed / MB,
      };
      prevAt = at;
      prevHandled = calls;
      checkpoints.push(cp);
      send({ type: 'checkpoint', checkpoint: cp });
      while (next <= calls) next += task.checkpointEvery;
    };
    await waitDone(adapter, db, () => calls, task.jobs, task.stallMs, () => checkpoint());
    const elapsedMs = now() - first;
    checkpoint(true);
    return { jobs: task.jobs, elapsedMs, jobsPerSec: (task.jobs / elapsedMs) * 1000, checkpoints, rssPeakMB: rss.stop() / MB };
  } finally {
    await worker.stop().catch(() => undefined);
    await db.end().catch(() => undefined);
  }
}
