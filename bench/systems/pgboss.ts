// pg-boss 12 adapter, in batch mode: one work() loop (localConcurrency 1) fetching
// batchSize = concurrency jobs per round trip, running them all at once, and completing the batch
// in one statement when the handler resolves. That keeps at most `concurrency` jobs in flight, the
// closest match to a worker with N concurrent jobs that its API has (localConcurrency N with
// batchSize 1 would fetch and complete one job per round trip, i.e. not batch mode).
// burstWhenBatchFull keeps it fetching while batches come back full; without it pg-boss sleeps
// pollingIntervalSeconds (default 2 s) after every batch. LISTEN/NOTIFY is on (useListenNotify and
// a queue created with notify: true), its lowest-latency setting. Everything else is its default.
import { PgBoss, type ConstructorOptions, type Job } from 'pg-boss';
import {
  PRODUCER_APP,
  packageVersion,
  type BenchPayload,
  type Producer,
  type RunningWorker,
  type SystemAdapter,
  type VariantInfo,
  type WorkerOptions,
} from './types.js';

export const QUEUE = 'bench';
const SCHEMA = 'pgboss';

export const variants: VariantInfo[] = [
  {
    id: 'pgboss',
    system: 'pgboss',
    label: 'pg-boss',
    describe: (c) =>
      `work() batchSize ${c}, localConcurrency 1, burstWhenBatchFull, pollingIntervalSeconds 0.5, ` +
      'useListenNotify + queue notify, pool max 10 (default)',
  },
];

function quiet(boss: PgBoss, who: string): PgBoss {
  boss.on('error', (err: unknown) => process.stderr.write(`[pg-boss ${who}] error: ${(err as Error).message ?? String(err)}\n`));
  return boss;
}

async function startBoss(opts: ConstructorOptions, who: string): Promise<PgBoss> {
  const boss = quiet(new PgBoss({ schema: SCHEMA, ...opts }), who);
  await boss.start();
  return boss;
}

export const adapter: SystemAdapter = {
  system: 'pgboss',
  label: 'pg-boss',
  // partitioned by queue: the parent holds no rows of its own
  jobsTable: `${SCHEMA}.job`,

  version() {
    return `pg-boss ${packageVersion('pg-boss')}`;
  },

  async install(url) {
    const boss = await startBoss(
      { connectionString: url, application_name: PRODUCER_APP, supervise: false, schedule: false, registerInstance: false, max: 2 },
      'install',
    );
    try {
      await boss.createQueue(QUEUE, { notify: true });
    } finally {
      await boss.stop({ graceful: false });
    }
  },

  async reset(db) {
    await db.query(`TRUNCATE ${SCHEMA}.job`);
  },

  async remaining(db) {
    const r = await db.query<{ n: string }>(
      `SELECT count(*) AS n FROM ${SCHEMA}.job WHERE name = $1 AND state IN ('created', 'retry', 'active')`,
      [QUEUE],
    );
    return Number(r.rows[0]!.n);
  },

  async total(db) {
    const r = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${SCHEMA}.job WHERE name = $1`, [QUEUE]);
    return Number(r.rows[0]!.n);
  },

  async producer(url): Promise<Producer> {
    const boss = await startBoss(
      {
        connectionString: url,
        application_name: PRODUCER_APP,
        max: 1,
        supervise: false,
        schedule: false,
        migrate: false,
        registerInstance: false,
      },
      'producer',
    );
    return {
      async addMany(count, chunk) {
        for (let done = 0; done < count; done += chunk) {
          const n = Math.min(chunk, count - done);
          await boss.insert(QUEUE, Array.from({ length: n }, () => ({ data: {} })));
        }
      },
      async addOneIn(tx, payload) {
        // send() with the `db` option runs its statement on the caller's transaction
        await boss.send(QUEUE, payload, { db: { executeSql: (text, values) => tx.query(text, values) } });
      },
      async close() {
        await boss.stop({ graceful: false });
      },
    };
  },

  async preload() {
    // imported statically with this module
  },

  async startWorker(url, opts: WorkerOptions): Promise<RunningWorker> {
    const boss = await startBoss({ connectionString: url, useListenNotify: true }, 'worker');
    await boss.work<BenchPayload>(
      QUEUE,
      { batchSize: opts.concurrency, localConcurrency: 1, burstWhenBatchFull: true, pollingIntervalSeconds: 0.5 },
      async (jobs: Job<BenchPayload>[]) => {
        await Promise.all(
          jobs.map(async (job) => {
            opts.onJob(job.data ?? {});
          }),
        );
      },
    );
    return {
      async stop() {
        await boss.stop({ graceful: true, timeout: 10_000 });
      },
    };
  },
};
