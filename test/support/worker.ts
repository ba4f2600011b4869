// Starting workers against a test database, and reading what happened to jobs.
import pg from 'pg';
import { Worker } from '../../src/worker/worker.js';
import type { ConfigInput, SluiceConfig } from '../../src/config/schema.js';
import type { TaskList } from '../../src/tasks.js';
import { migrate } from '../../src/db/migrate.js';
import { createLogger, type Logger } from '../../src/observe/logger.js';

const started = new Set<Worker>();

export async function migrated(url: string, max = 4): Promise<pg.Pool> {
  const pool = new pg.Pool({ connectionString: url, max });
  pool.on('error', () => undefined);
  await migrate(pool, 'sluice');
  return pool;
}

export async function startWorker(url: string, tasks: TaskList, config: ConfigInput = {}, logger?: Logger): Promise<Worker> {
  const worker = new Worker({
    config: {
      ...config,
      database: { url, poolSize: 3, ...config.database },
      worker: { concurrency: 4, pollMs: 60_000, retryBaseMs: 10, heartbeatMs: 500, ...config.worker },
      http: { enabled: false },
      log: { level: (process.env.SLUICE_TEST_LOG ?? 'silent') as SluiceConfig['log']['level'], format: 'json', ...config.log },
    },
    tasks,
    logger: logger ?? createLogger({ level: process.env.SLUICE_TEST_LOG ?? 'silent', format: 'json' }),
  });
  await worker.start();
  started.add(worker);
  return worker;
}

export async function stopWorkers(): Promise<void> {
  for (const w of [...started]) {
    started.delete(w);
    await w.stop();
  }
}

export async function statusCounts(pool: pg.Pool, where = 'true'): Promise<Record<string, number>> {
  const r = await pool.query(`SELECT status, count(*)::int AS n FROM sluice.jobs WHERE ${where} GROUP BY status`);
  return Object.fromEntries(r.rows.map((x) => [x.status, x.n]));
}

/** A gate a handler can wait on, opened by the test. */
export function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}
