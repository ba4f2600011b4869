// sluice adapter: the Worker of the build in dist/ (what `sluice start` runs; npm run bench builds
// it first) with database.poolSize 4, producers through the public addJob/addJobs. The
// "sluice-limited" variant is the same worker on a queue with a cluster-wide concurrency limit
// equal to its slots: the limit never binds, so the difference is what the exact limit costs (its
// claims go through claim_controlled_jobs). The "sluice-prefetch" variant claims up to PREFETCH
// jobs ahead of free slots (worker.prefetch), as graphile-worker's batched setting fetches up to
// 500 into its local queue. "sluice-delete" is the prefetch variant deleting each job as it
// completes (worker.keepCompletedMs 0), as graphile-worker deletes its jobs: the difference to
// sluice prefetch is what keeping the row costs.
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { setQueueLimits } from '../../dist/admin/queues.js';
import { migrate } from '../../dist/db/migrate.js';
import { channelFor } from '../../dist/db/sql.js';
import { addJob, addJobs } from '../../dist/enqueue.js';
import { Worker } from '../../dist/worker/worker.js';
import {
  PRODUCER_APP,
  TASK,
  type BenchPayload,
  type Producer,
  type RunningWorker,
  type SystemAdapter,
  type VariantInfo,
  type WorkerOptions,
} from './types.js';

export const SCHEMA = 'sluice';
export const POOL_SIZE = 4;
export const PREFETCH = 500;

export const variants: VariantInfo[] = [
  {
    id: 'sluice',
    system: 'sluice',
    label: 'sluice',
    describe: (c) => `worker.concurrency ${c}, database.poolSize ${POOL_SIZE}`,
  },
  {
    id: 'sluice-prefetch',
    system: 'sluice',
    label: 'sluice prefetch',
    describe: (c) => `worker.concurrency ${c}, worker.prefetch ${PREFETCH}, database.poolSize ${POOL_SIZE}`,
  },
  {
    id: 'sluice-delete',
    system: 'sluice',
    label: 'sluice prefetch, delete',
    describe: () => `as sluice prefetch, and worker.keepCompletedMs 0 (a completed job is deleted, as graphile-worker does)`,
  },
  {
    id: 'sluice-limited',
    system: 'sluice',
    label: 'sluice, queue limit',
    describe: (c) => `as sluice, and sluice.set_queue_limits('default', concurrency => ${c})`,
  },
];

function producerPool(url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 1, application_name: PRODUCER_APP });
  pool.on('error', () => undefined);
  return pool;
}

export const adapter: SystemAdapter = {
  system: 'sluice',
  label: 'sluice',
  jobsTable: `${SCHEMA}.jobs`,

  version() {
    return `sluice ${(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version}`;
  },

  async install(url) {
    const pool = producerPool(url);
    try {
      await migrate(pool, SCHEMA);
    } finally {
      await pool.end();
    }
  },

  async reset(db) {
    await db.query(`TRUNCATE ${SCHEMA}.jobs`);
    await db.query(`DELETE FROM ${SCHEMA}.workers`);
  },

  async remaining(db) {
    // one count per status, so each reads its partial index: `status IN (...)` would scan the
    // whole table, which matters with millions of finished rows (--finished-rows, --long)
    const r = await db.query<{ n: string }>(
      `SELECT (SELECT count(*) FROM ${SCHEMA}.jobs WHERE status = 'queued')
            + (SELECT count(*) FROM ${SCHEMA}.jobs WHERE status = 'running') AS n`,
    );
    return Number(r.rows[0]!.n);
  },

  async total(db) {
    const r = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${SCHEMA}.jobs`);
    return Number(r.rows[0]!.n);
  },

  async producer(url): Promise<Producer> {
    const pool = producerPool(url);
    return {
      async addMany(count, chunk) {
        for (let done = 0; done < count; done += chunk) {
          const n = Math.min(chunk, count - done);
          await addJobs(pool, Array.from({ length: n }, () => ({ task: TASK })), SCHEMA);
        }
      },
      async addOneIn(tx, payload) {
        await addJob(tx, { task: TASK, payload: { ...payload } }, SCHEMA);
      },
      async close() {
        await pool.end();
      },
    };
  },

  async preload() {},

  async startWorker(url, opts: WorkerOptions): Promise<RunningWorker> {
    const admin = producerPool(url);
    try {
      await setQueueLimits(admin, SCHEMA, 'default', { concurrency: opts.variant === 'sluice-limited' ? opts.concurrency : null });
    } finally {
      await admin.end();
    }
    const worker = new Worker({
      config: {
        database: { url, poolSize: POOL_SIZE },
        worker: {
          concurrency: opts.concurrency,
          queues: ['default'],
          prefetch: opts.variant === 'sluice-prefetch' || opts.variant === 'sluice-delete' ? PREFETCH : 0,
          ...(opts.variant === 'sluice-delete' ? { keepCompletedMs: 0 } : {}),
          ...(opts.pollMs ? { pollMs: opts.pollMs } : {}),
        },
        http: { enabled: false },
        log: { level: 'warn' },
      },
      tasks: {
        [TASK]: async (payload: BenchPayload) => {
          opts.onJob(payload ?? {});
        },
      },
    });
    await worker.start();
    return {
      async stop() {
        await worker.stop();
      },
    };
  },
};

// ---------------------------------------------------------------------------------------------
// the finished-rows scenario: a jobs table that already holds N completed jobs

export const FINISHED_TASK = 'bench_finished';

/** Inserts `rows` completed jobs straight into the table, in statements of at most 1,000,000 rows. */
export async function fillFinished(db: pg.ClientBase, rows: number, onProgress: (done: number) => void): Promise<void> {
  const step = 1_000_000;
  for (let from = 1; from <= rows; from += step) {
    const to = Math.min(rows, from + step - 1);
    await db.query(
      `INSERT INTO ${SCHEMA}.jobs (task, status, attempts, run_at, created_at, started_at, finished_at)
       SELECT $1, 'completed', 1, t, t, t, t
         FROM (SELECT now() - make_interval(secs => g::double precision / 100) AS t
                 FROM generate_series($2::bigint, $3::bigint) AS g) s`,
      [FINISHED_TASK, from, to],
    );
    onProgress(to);
  }
  await db.query(`VACUUM ANALYZE ${SCHEMA}.jobs`);
}

/** Removes everything but the pre-filled finished rows (the caller vacuums). */
export async function resetKeepingFinished(db: pg.ClientBase): Promise<void> {
  await db.query(`DELETE FROM ${SCHEMA}.jobs WHERE task <> $1`, [FINISHED_TASK]);
  await db.query(`DELETE FROM ${SCHEMA}.workers`);
}

export async function countFinished(db: pg.ClientBase): Promise<number> {
  const r = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${SCHEMA}.jobs WHERE task = $1`, [FINISHED_TASK]);
  return Number(r.rows[0]!.n);
}

// ---------------------------------------------------------------------------------------------
// the notify scenario: enqueueing from plain SQL, with sluice's notifications on or off

/** One job, one statement, one transaction: the way any client can enqueue. */
export const ADD_ONE_SQL = `SELECT ${SCHEMA}.add_job('${TASK}')`;

/** The channel sluice's workers LISTEN on. */
export const NOTIFY_CHANNEL = channelFor(SCHEMA);
/** Held by a session, the wake lock of the queue the bench uses: a runner that waits, never woken. */
export const WAIT_FOR_DEFAULT_SQL = `SELECT pg_advisory_lock(${SCHEMA}.wake_lock_key('default'))`;

/** Switches every user trigger of the jobs table (they are what notifies) on or off. */
export async function setTriggers(db: pg.ClientBase, enabled: boolean): Promise<void> {
  await db.query(`ALTER TABLE ${SCHEMA}.jobs ${enabled ? 'ENABLE' : 'DISABLE'} TRIGGER USER`);
}
