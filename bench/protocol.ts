// Messages between the orchestrator (bench/run.ts) and a child process (bench/child.ts).
import type { SystemName, VariantId } from './systems/types.js';

export type TpsConsumer = 'worker' | 'waiting-runner';

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
    }
  | {
      /** `clients` connections, each running `sql` (one transaction) back to back for `seconds`. */
      mode: 'tps';
      system: SystemName;
      url: string;
      sql: string;
      clients: number;
      seconds: number;
      /** One more connection LISTENs here throughout and counts what arrives (every notification reaches every listener). */
      listenChannel: string;
      /**
       * Who takes the jobs meanwhile: a sluice worker at `concurrency` that works them off, or
       * (waiting-runner) only the listening connection, holding the wake lock with `waitSql` as a
       * runner that waits and is never woken: every due insert notifies, the cost of before.
       */
      consumer: TpsConsumer;
      concurrency: number;
      /** worker.pollMs of the consumer worker (set for the triggers-off run, where it hears nothing). */
      pollMs?: number;
      waitSql: string;
    }
  | {
      /**
       * A worker and `producers` connections adding single jobs at a steady combined `rate`,
       * through `phases` (the orchestrator is asked before each phase begins and at the end).
       */
      mode: 'load';
      system: SystemName;
      variant: VariantId;
      url: string;
      concurrency: number;
      producers: number;
      rate: number;
      phases: PhaseSpec[];
      /** Fails the run when jobs wait and none starts, or no job commits, for this long. */
      stallMs: number;
    }
  | {
      /** An idle worker; `commits` times in a row, one job added in a transaction that commits `holdMs` later. */
      mode: 'delayed';
      system: SystemName;
      variant: VariantId;
      url: string;
      concurrency: number;
      commits: number;
      holdMs: number;
    };

export interface PhaseSpec {
  name: string;
  seconds: number;
}

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

export interface TpsResult {
  clients: number;
  transactions: number;
  ms: number;
  /** Transactions per second, all clients together. */
  tps: number;
  /** Per transaction, as the client saw it. */
  latencyP50Ms: number | null;
  latencyP99Ms: number | null;
  /** Notifications the listening connection received during the run. */
  notifications: number;
}

/** p50/p99/max of one set of durations, in ms; null when there are none. */
export interface Spread {
  n: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
}

export interface LoadPhaseResult {
  name: string;
  /** Actual length: the planned seconds plus the hand-over to the next phase. */
  seconds: number;
  offeredPerSec: number;
  /** Transactions begun / committed / jobs whose handler started within the phase, per second. */
  sentPerSec: number;
  committedPerSec: number;
  startedPerSec: number;
  /** How late the producers began their transactions against the schedule. */
  sendLagMs: Spread;
  /** Handler start minus the moment COMMIT was sent, for jobs committed in the phase. */
  pickupMs: Spread;
  /** Handler start minus the moment COMMIT returned (can be slightly negative: the ack and the worker race). */
  pickupAfterCommitReturnedMs: Spread;
  /** BEGIN sent to COMMIT returned: the producer's cost of adding one job. */
  producerMs: Spread;
  /**
   * COMMIT sent to COMMIT returned: a job is visible only once its commit is (with fsync on, after
   * its WAL flush), so pickup from COMMIT sent cannot be lower than about this.
   */
  commitMs: Spread;
  /** Most jobs committed but not yet started at any second's end in the phase. */
  maxBacklog: number;
  /** Jobs committed in the phase whose handler never started (within the drain after the run). */
  neverStarted: number;
}

/** One second of a load run, counted from the start of the first phase. */
export interface LoadSecond {
  second: number;
  phase: number;
  committed: number;
  started: number;
  /** Committed but not yet started at the second's end. */
  backlog: number;
  pickupP50Ms: number | null;
  pickupP99Ms: number | null;
  pickupMaxMs: number | null;
  producerP99Ms: number | null;
}

export interface LoadResult {
  producers: number;
  rate: number;
  concurrency: number;
  phases: LoadPhaseResult[];
  seconds: LoadSecond[];
  /** Jobs committed but not started once the producers stopped and the drain gave up (0 normally). */
  unstartedAtEnd: number;
}

export interface DelayedResult {
  commits: number;
  holdMs: number;
  /** Per commit: handler start minus the moment COMMIT was sent. */
  afterCommitSentMs: number[];
  /** Per commit: handler start minus the moment COMMIT returned. */
  afterCommitReturnedMs: number[];
  /** Jobs not picked up within 10 s of their commit. */
  missed: number;
}

export type ChildResult = EnqueueResult | WorkoffResult | LatencyResult | LongResult | TpsResult | LoadResult | DelayedResult;

export type ToChild = { type: 'run'; task: ChildTask } | { type: 'go' } | { type: 'phase-go'; index: number };

export type FromChild =
  | { type: 'ready' }
  | { type: 'phase'; index: number }
  | { type: 'checkpoint'; checkpoint: LongCheckpoint }
  | { type: 'result'; result: ChildResult }
  | { type: 'error'; message: string };
