// Messages between the orchestrator (bench/run.ts) and a child process (bench/child.ts).
import type { SystemName, VariantId } from './systems/types.js';

export type ChildTask =
  | { mode: 'enqueue'; system: SystemName; url: string; jobs: number; chunk: number }
  | {
      mode: 'workoff';
      system: SystemName;
      variant: VariantId;
      url: string;
      /** Jobs already queued when the child starts. */
      jobs: number;
      concurrency: number;
      /** Fails the run when no job starts or finishes for this long. */
      stallMs: number;
    }
  | {
      mode: 'latency';
      system: SystemName;
      variant: VariantId;
      url: string;
      concurrency: number;
      rate: number;
      seconds: number;
    }
  | {
      mode: 'long';
      system: SystemName;
      variant: VariantId;
      url: string;
      jobs: number;
      concurrency: number;
      checkpointEvery: number;
      stallMs: number;
    };

export interface EnqueueResult {
  jobs: number;
  ms: number;
  jobsPerSec: number;
}

export interface WorkoffResult {
  jobs: number;
  handlerCalls: number;
  /** worker.start() called -> first handler call. */
  startToFirstMs: number;
  /** first handler call -> the database shows every job finished. */
  firstToDoneMs: number;
  /** jobs / firstToDone: the work-off rate. */
  jobsPerSec: number;
  /** jobs / (start() called -> done): the same including worker start-up. */
  jobsPerSecInclStart: number;
  rssBaselineMB: number;
  rssPeakMB: number;
  rssEndMB: number;
  /** CPU of the worker process from start() to done. */
  workerCpuMs: number;
  /** Busy CPU of the whole machine (worker + PostgreSQL + the rest) from start() to done. */
  machineCpuMs: number | null;
  stopMs: number;
}

export interface LatencyResult {
  sent: number;
  handled: number;
  /** Achieved enqueue rate. */
  rate: number;
  /** Median time from sending COMMIT to its acknowledgement. */
  commitRoundTripMs: number | null;
  /** Handler start minus the moment the enqueuing transaction's COMMIT was sent, per job. */
  latenciesMs: number[];
  p50: number | null;
  p95: number | null;
  p99: number | null;
  max: number | null;
}

export interface LongCheckpoint {
  handled: number;
  elapsedMs: number;
  /** Rate over the interval since the previous checkpoint. */
  intervalJobsPerSec: number;
  rssMB: number;
  /** Heap after a full GC: what the process retains. */
  heapUsedMB: number;
}

export interface LongResult {
  jobs: number;
  elapsedMs: number;
  jobsPerSec: number;
  checkpoints: LongCheckpoint[];
  rssPeakMB: number;
}

export type ChildResult = EnqueueResult | WorkoffResult | LatencyResult | LongResult;

export type ToChild = { type: 'run'; task: ChildTask } | { type: 'go' };

export type FromChild =
  | { type: 'ready' }
  | { type: 'checkpoint'; checkpoint: LongCheckpoint }
  | { type: 'result'; result: ChildResult }
  | { type: 'error'; message: string };
