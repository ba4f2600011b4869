// graphile-worker 0.18 adapter. Two measured settings:
//  - "graphile": its defaults apart from concurrency (each of the `concurrency` workers fetches
//    one job per round trip and completes it in another; pollInterval 2000 ms; LISTEN/NOTIFY).
//  - "graphile-batched": the documented batching settings (preset.worker.localQueue.size 500,
//    completeJobBatchDelay 0, failJobBatchDelay 0), see
//    https://worker.graphile.org/docs/performance#batching
// Both use maxPoolSize = max(10, concurrency + 2), graphile-worker's own recommendation
// ("we recommend setting it to 10 or concurrentJobs + 2, whichever is larger"); with the default
// pool of 10 at concurrency 50 it warns about non-optimal performance.
import {
  Logger,
  makeWorkerUtils,
  run,
  runMigrations,
  type AddJobsJobSpec,
  type LogFunctionFactory,
  type Runner,
  type RunnerOptions,
  type WorkerUtils,
} from 'graphile-worker';
import {
  PRODUCER_APP,
  packageVersion,
  TASK,
  withAppName,
  type BenchPayload,
  type Producer,
  type RunningWorker,
  type SystemAdapter,
  type VariantInfo,
  type WorkerOptions,
} from './types.js';

const WORKER_APP = 'graphile-worker';

/** Prints graphile-worker's warnings and errors; drops its info and debug lines. */
const quietLogFactory: LogFunctionFactory = (scope) => (level, message) => {
  if (level === 'error' || level === 'warning') {
    process.stderr.write(`[graphile-worker ${scope.label ?? ''}] ${level}: ${message}\n`);
  }
};
const logger = new Logger(quietLogFactory);

export function poolSizeFor(concurrency: number): number {
  return Math.max(10, concurrency + 2);
}

export const BATCHED_PRESET = {
  worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 },
} satisfies GraphileConfig.Preset;

export const variants: VariantInfo[] = [
  {
    id: 'graphile',
    system: 'graphile',
    label: 'graphile-worker',
    describe: (c) => `concurrency ${c}, maxPoolSize ${poolSizeFor(c)}, pollInterval 2000 (default), no local queue`,
  },
  {
    id: 'graphile-batched',
    system: 'graphile',
    label: 'graphile-worker batched',
    describe: (c) =>
      `concurrency ${c}, maxPoolSize ${poolSizeFor(c)}, localQueue.size 500, completeJobBatchDelay 0, failJobBatchDelay 0`,
  },
];

async function utils(url: string): Promise<WorkerUtils> {
  return makeWorkerUtils({ connectionString: withAppName(url, PRODUCER_APP), maxPoolSize: 1, logger });
}

export const adapter: SystemAdapter = {
  system: 'graphile',
  label: 'graphile-worker',
  jobsTable: 'graphile_worker._private_jobs',

  version() {
    return `graphile-worker ${packageVersion('graphile-worker')}`;
  },

  async install(url) {
    await runMigrations({ connectionString: withAppName(url, PRODUCER_APP), logger });
  },

  async reset(db) {
    // completed jobs are deleted by graphile-worker; failed ones and queue rows are cleared here
    await db.query('TRUNCATE graphile_worker._private_jobs, graphile_worker._private_job_queues');
  },

  async remaining(db) {
    // a completed graphile-worker job is deleted, so every row left is unfinished
    const r = await db.query<{ n: string }>('SELECT count(*) AS n FROM graphile_worker._private_jobs');
    return Number(r.rows[0]!.n);
  },

  async total(db) {
    return adapter.remaining(db);
  },

  async producer(url): Promise<Producer> {
    const u = await utils(url);
    return {
      async addMany(count, chunk) {
        for (let done = 0; done < count; done += chunk) {
          const n = Math.min(chunk, count - done);
          const specs: AddJobsJobSpec[] = Array.from({ length: n }, () => ({ identifier: TASK, payload: {} }));
          await u.addJobs(specs);
        }
      },
      async addOneIn(tx, payload) {
        // graphile-worker's SQL API, the documented way to add a job inside your own transaction
        await tx.query('SELECT graphile_worker.add_job($1, $2::json)', [TASK, JSON.stringify(payload)]);
      },
      async close() {
        await u.release();
      },
    };
  },

  async preload() {
    // imported statically with this module
  },

  async startWorker(url, opts: WorkerOptions): Promise<RunningWorker> {
    const options: RunnerOptions = {
      connectionString: withAppName(url, WORKER_APP),
      concurrency: opts.concurrency,
      maxPoolSize: poolSizeFor(opts.concurrency),
      noHandleSignals: true,
      logger,
      taskList: {
        [TASK]: async (payload) => {
          opts.onJob((payload ?? {}) as BenchPayload);
        },
      },
      // no crontab file lookup
      parsedCronItems: [],
      ...(opts.variant === 'graphile-batched' ? { preset: BATCHED_PRESET } : {}),
    };
    const runner: Runner = await run(options);
    return {
      async stop() {
        await runner.stop();
      },
    };
  },
};
