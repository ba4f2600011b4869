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
import { JobLog, ScheduledProducers, addInTransaction, producerClients, summarizeLoad } from './load.js';
import { MB, RssSampler, machineBusyMs, now, percentile, processCpuMs, sleep } from './measure.js';
import type {
  ChildResult,
  ChildTask,
  DelayedResult,
  EnqueueResult,
  FromChild,
  LatencyResult,
  LoadResult,
  LongCheckpoint,
  LongResult,
  ToChild,
  TpsResult,
  WorkoffResult,
} from './protocol.js';

function send(msg: FromChild): void {
  process.send?.(msg);
}

let goResolve: (() => void) | undefined;
const go = new Promise<void>((r) => (goResolve = r));
let phaseWaiter: { index: number; resolve: (at: number) => void } | undefined;

/** Asks the orchestrator to set up phase `index` (e.g. begin holding back xmin); resolves with the moment it is in place. */
function enterPhase(index: number): Promise<number> {
  return new Promise((resolve) => {
    phaseWaiter = { index, resolve };
    send({ type: 'phase', index });
  });
}

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
  } else if (msg.type === 'phase-go' && msg.index === phaseWaiter?.index) {
    phaseWaiter.resolve(now());
  }
});

async function run(task: ChildTask): Promise<ChildResult> {
  const adapter = await loadAdapter(task.system);
  if (task.mode === 'tps') return tps(adapter, task);
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
    case 'load':
      return load(adapter, task);
    case 'delayed':
      return delayed(adapter, task);
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
  const enqueue = async (seq: number) => (await addInTransaction(tx, producer, seq)).commitSent;
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

/** Each connection runs the statement (its own transaction) back to back; the orchestrator set up the table. */
async function tps(adapter: SystemAdapter, task: Extract<ChildTask, { mode: 'tps' }>): Promise<TpsResult> {
  const clients = await producerClients(task.url, task.clients);
  const listener = await monitorClient(task.url);
  let notifications = 0;
  listener.on('notification', () => notifications++);
  let worker: RunningWorker | undefined;
  try {
    await listener.query(`LISTEN ${listener.escapeIdentifier(task.listenChannel)}`);
    if (task.consumer === 'waiting-runner') await listener.query(task.waitSql);
    else worker = await startWorker(adapter, task.url, { variant: 'sluice', concurrency: task.concurrency, pollMs: task.pollMs, onJob: () => undefined });
    // one transaction each first: connecting and planning are not in the timing
    await Promise.all(clients.map((c) => c.query(task.sql)));
    send({ type: 'ready' });
    await go;
    notifications = 0;
    const latencies: number[] = [];
    const t0 = now();
    const end = t0 + task.seconds * 1000;
    await Promise.all(
      clients.map(async (c) => {
        while (now() < end) {
          const s = now();
          await c.query(task.sql);
          latencies.push(now() - s);
        }
      }),
    );
    const ms = now() - t0;
    await sleep(200); // the notifications of the last transactions are on their way
    if (worker) await stopWorker(worker);
    worker = undefined;
    return {
      clients: task.clients,
      transactions: latencies.length,
      ms,
      tps: (latencies.length / ms) * 1000,
      latencyP50Ms: percentile(latencies, 50),
      latencyP99Ms: percentile(latencies, 99),
      notifications,
    };
  } finally {
    if (worker) await stopWorker(worker);
    await Promise.all([...clients, listener].map((c) => c.end().catch(() => undefined)));
  }
}

/** The drain after a load run gives up when no job starts for DRAIN_IDLE_MS, or after DRAIN_MAX_MS; what is left is reported. */
const DRAIN_IDLE_MS = 10_000;
const DRAIN_MAX_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;

/** A worker that does not stop must not keep the child from reporting (its error, say). */
async function stopWorker(worker: RunningWorker): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      process.stderr.write(`the worker did not stop within ${STOP_TIMEOUT_MS / 1000} s; leaving it\n`);
      resolve();
    }, STOP_TIMEOUT_MS);
  });
  try {
    await Promise.race([worker.stop(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A worker and producers in this one process, so that a job's commit and its handler's start are
 * read from the same clock. The producers run on a schedule through all phases; before each phase
 * the orchestrator sets up what the phase needs (and records its own samples by phase).
 */
async function load(adapter: SystemAdapter, task: Extract<ChildTask, { mode: 'load' }>): Promise<LoadResult> {
  const jobs = new JobLog();
  let started = 0;
  let lastStartAt = 0;
  const worker = await startWorker(adapter, task.url, {
    variant: task.variant,
    concurrency: task.concurrency,
    onJob: (payload: BenchPayload) => {
      const seq = payload.seq;
      if (typeof seq === 'number' && seq >= 0 && Number.isNaN(jobs.started.get(seq))) {
        lastStartAt = now();
        jobs.started.set(seq, lastStartAt);
        started++;
      }
    },
  });
  const producer = await adapter.producer(task.url);
  const txs = await producerClients(task.url, task.producers);
  let producers: ScheduledProducers | undefined;
  try {
    // the worker settles into idle; each producer connection adds one unmeasured job (seq -1)
    await sleep(1000);
    await Promise.all(txs.map((tx) => addInTransaction(tx, producer, -1)));
    await sleep(200);
    const bounds = [await enterPhase(0)];
    lastStartAt = bounds[0]!;
    producers = new ScheduledProducers(txs, producer, task.rate, bounds[0]!, jobs);
    for (let i = 0; i < task.phases.length; i++) {
      const until = bounds[i]! + task.phases[i]!.seconds * 1000;
      while (now() < until) {
        checkLoad(producers, started, lastStartAt, task.stallMs);
        await sleep(Math.min(100, Math.max(1, until - now())));
      }
      bounds.push(await enterPhase(i + 1));
    }
    await producers.stop();
    if (producers.error) throw producers.error;
    // the jobs committed last still deserve their pickup time
    const drainUntil = now() + DRAIN_MAX_MS;
    while (started < producers.committed && now() - lastStartAt < DRAIN_IDLE_MS && now() < drainUntil) await sleep(10);
    const settings = { producers: task.producers, rate: task.rate, concurrency: task.concurrency };
    return summarizeLoad(jobs, bounds, task.phases, settings, producers.committed - started);
  } finally {
    await producers?.stop();
    await Promise.all(txs.map((tx) => tx.end().catch(() => undefined)));
    await producer.close().catch(() => undefined);
    await stopWorker(worker);
  }
}

/** Fails the run when a producer failed, when nothing commits, or when jobs wait and none starts. */
function checkLoad(producers: ScheduledProducers, started: number, lastStartAt: number, stallMs: number): void {
  if (producers.error) throw producers.error;
  const secs = Math.round(stallMs / 1000);
  if (now() - producers.lastCommitAt > stallMs) throw new Error(`stalled: no job committed for ${secs} s`);
  const waiting = producers.committed - started;
  if (waiting > 0 && now() - lastStartAt > stallMs) {
    throw new Error(`stalled: ${waiting} committed jobs wait and none started for ${secs} s`);
  }
}

/** One job per transaction, committed `holdMs` after the insert, one after the other, into an idle worker. */
async function delayed(adapter: SystemAdapter, task: Extract<ChildTask, { mode: 'delayed' }>): Promise<DelayedResult> {
  const started = new Array<number>(task.commits).fill(NaN);
  const worker = await startWorker(adapter, task.url, {
    variant: task.variant,
    concurrency: task.concurrency,
    onJob: (payload: BenchPayload) => {
      const seq = payload.seq;
      if (typeof seq === 'number' && seq >= 0 && seq < task.commits && Number.isNaN(started[seq]!)) started[seq] = now();
    },
  });
  const producer = await adapter.producer(task.url);
  const [tx] = await producerClients(task.url, 1);
  try {
    await sleep(1000);
    await addInTransaction(tx!, producer, -1);
    const afterSent: number[] = [];
    const afterReturned: number[] = [];
    let missed = 0;
    for (let i = 0; i < task.commits; i++) {
      await sleep(200);
      await tx!.query('BEGIN');
      await producer.addOneIn(tx!, { seq: i });
      await sleep(task.holdMs);
      const sent = now();
      await tx!.query('COMMIT');
      const returned = now();
      const deadline = returned + 10_000;
      while (Number.isNaN(started[i]!) && now() < deadline) await sleep(1);
      if (Number.isNaN(started[i]!)) {
        missed++;
        continue;
      }
      afterSent.push(started[i]! - sent);
      afterReturned.push(started[i]! - returned);
    }
    return { commits: task.commits, holdMs: task.holdMs, afterCommitSentMs: afterSent, afterCommitReturnedMs: afterReturned, missed };
  } finally {
    await tx!.end().catch(() => undefined);
    await producer.close().catch(() => undefined);
    await stopWorker(worker);
  }
}
