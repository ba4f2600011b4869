// Operator functions behind `sluice status`: jobs per queue and state, live workers, and queues
// whose jobs no live worker takes. The SQL lives in sql/admin/.
import { loadQueries } from '../db/queries.js';
import type { Queryable } from '../db/statement.js';

export interface QueueStatus {
  queue: string;
  /** Queued and due now. */
  runnable: number;
  /** Queued with a run_at in the future. */
  scheduled: number;
  running: number;
  completed: number;
  failed: number;
  cancelled: number;
  /** Seconds the oldest runnable job has waited past its run_at; null when none is runnable. */
  oldestRunnableSeconds: number | null;
}

export interface WorkerStatus {
  id: string;
  host: string;
  pid: number;
  queues: string[];
  /** The tasks it has handlers for (null: a worker from before sluice claimed by task, which took every task). */
  tasks: string[] | null;
  concurrency: number;
  poolSize: number;
  version: string | null;
  startedAt: string;
  heartbeatAt: string;
  heartbeatAgeSeconds: number;
  /** Heartbeat within worker.rescueAfterMs; a dead worker's jobs are rescued by the others. */
  alive: boolean;
  /** Jobs it holds now. */
  running: number;
}

function iso(v: Date): string {
  return v.toISOString();
}

export async function queueStatus(db: Queryable, schema: string): Promise<QueueStatus[]> {
  const res = await loadQueries(schema).queue_status.run(db, {});
  return res.rows.map((r) => ({
    queue: r.queue,
    runnable: r.runnable,
    scheduled: r.scheduled,
    running: r.running,
    completed: r.completed,
    failed: r.failed,
    cancelled: r.cancelled,
    oldestRunnableSeconds: r.oldest_runnable_seconds,
  }));
}

/**
 * Queues with waiting jobs (runnable or scheduled) that no live worker takes: nothing records an
 * error on such jobs, they just wait, so `sluice status` names the queues.
 */
export function unservedQueues(queues: QueueStatus[], workers: WorkerStatus[]): string[] {
  const served = new Set(workers.filter((w) => w.alive).flatMap((w) => w.queues));
  return queues.filter((q) => q.runnable + q.scheduled > 0 && !served.has(q.queue)).map((q) => q.queue);
}

/** Queued jobs of a task in a queue that no live worker of that queue has a handler for. */
export interface UnhandledTask {
  queue: string;
  task: string;
  queued: number;
}

/**
 * Tasks with queued jobs that no live worker of their queue handles: a worker claims only the
 * tasks it has handlers for, so these wait (a rolling deploy not finished, a missing module).
 * Queues no live worker takes at all are unservedQueues'.
 */
export async function unhandledTasks(db: Queryable, schema: string, workers: WorkerStatus[]): Promise<UnhandledTask[]> {
  const live = workers.filter((w) => w.alive);
  const queued = (await loadQueries(schema).queued_tasks.run(db, {})).rows;
  return queued.filter(
    (q) => live.some((w) => w.queues.includes(q.queue)) && !live.some((w) => w.queues.includes(q.queue) && (w.tasks === null || w.tasks.includes(q.task))),
  );
}

export async function listWorkers(db: Queryable, schema: string, rescueAfterMs: number): Promise<WorkerStatus[]> {
  const res = await loadQueries(schema).workers.run(db, { rescueAfterMs });
  return res.rows.map((r) => ({
    id: r.id,
    host: r.host,
    pid: r.pid,
    queues: r.queues,
    tasks: r.tasks,
    concurrency: r.concurrency,
    poolSize: r.pool_size,
    version: r.version,
    startedAt: iso(r.started_at),
    heartbeatAt: iso(r.heartbeat_at),
    heartbeatAgeSeconds: r.heartbeat_age_seconds,
    alive: r.alive,
    running: r.running,
  }));
}
