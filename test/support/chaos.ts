// Chaos scenarios: worker processes on a throwaway cluster, and the invariants every scenario
// must keep. Figures go to $SLUICE_CHAOS_REPORT (JSON lines) for docs/reliability.md.
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { expect } from 'chai';
import pg from 'pg';
import type { LocalCluster } from '../../src/embedded/cluster.js';
import { migrate } from '../../src/db/migrate.js';
import { addJobs } from '../../src/enqueue.js';
import { startCluster, waitFor, type ClusterSettings } from './db.js';

export interface WorkerProcess {
  child: ChildProcess;
  id: string;
  lines: string[];
  exited: Promise<number | null>;
}

const children = new Set<ChildProcess>();

export async function chaosCluster(settings: ClusterSettings = {}): Promise<{ cluster: LocalCluster; admin: pg.Pool }> {
  // durable commits: a crash must not take back what the server acknowledged
  const cluster = await startCluster({ fsync: 'on', synchronous_commit: 'on', full_page_writes: 'on', ...settings });
  const admin = new pg.Pool({ connectionString: cluster.url(), max: 2, application_name: 'chaos-admin' });
  admin.on('error', () => undefined);
  await migrate(admin, 'sluice');
  await admin.query(`CREATE SCHEMA chaos;
    CREATE TABLE chaos.starts (job_id bigint NOT NULL, worker text NOT NULL, attempt int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE TABLE chaos.effects (job_id bigint PRIMARY KEY, worker text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());`);
  return { cluster, admin };
}

/** A worker process running `script` (test/support/worker-process.ts: the record task). */
export async function spawnWorker(url: string, env: Record<string, string> = {}, script = 'test/support/worker-process.ts'): Promise<WorkerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: url,
      SLUICE_LOG_LEVEL: 'info',
      SLUICE_LOG_FORMAT: 'json',
      SLUICE_RETRY_BASE_MS: '50',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const lines: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => {
    children.delete(child);
    resolve(code);
  }));
  const collect = (chunk: Buffer) => {
    for (const l of chunk.toString().split('\n')) if (l) {
      lines.push(l);
      if (process.env.SLUICE_TEST_LOG) process.stderr.write(`[worker ${child.pid}] ${l}\n`);
    }
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const ready = await waitFor('the worker process to start', () => {
    if (child.exitCode !== null) throw new Error(`worker exited with ${child.exitCode}: ${lines.slice(-5).join('\n')}`);
    return lines.find((l) => l.startsWith('ready '));
  }, 60_000);
  return { child, id: ready!.slice(6), lines, exited };
}

/** Kills every worker process still running (after each scenario, even a failed one). */
export async function killWorkers(): Promise<void> {
  for (const c of [...children]) {
    c.kill('SIGCONT');
    c.kill('SIGKILL');
  }
  await waitFor('worker processes to exit', () => children.size === 0, 10_000);
}

export async function enqueueRecordJobs(admin: pg.Pool, n: number, ms: () => number): Promise<void> {
  for (let i = 0; i < n; i += 5000) {
    await addJobs(admin, Array.from({ length: Math.min(5000, n - i) }, () => ({ task: 'record', payload: { ms: ms() }, maxAttempts: 25 })));
  }
}

export async function progress(admin: pg.Pool): Promise<{ done: number; running: number }> {
  const r = await admin.query(
    "SELECT count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled'))::int AS done, count(*) FILTER (WHERE status = 'running')::int AS running FROM sluice.jobs",
  );
  return r.rows[0];
}

export interface Figures {
  scenario: string;
  jobs: number;
  completed: number;
  failed?: number;
  executions?: number;
  duplicateExecutions?: number;
  rescuedJobs?: number;
  fencedWrites?: number;
  recoverySeconds?: number;
  peakConnections: number;
  budget: number;
}

/**
 * Every job final and completed once, effects exactly once per job, and every extra execution
 * explained by a rescue or a retry recorded on the job.
 */
export async function checkInvariants(
  admin: pg.Pool,
  jobs: number,
): Promise<{ jobs: number; completed: number; executions: number; duplicateExecutions: number; rescuedJobs: number }> {
  const status = await admin.query('SELECT status, count(*)::int AS n FROM sluice.jobs GROUP BY status');
  const counts = Object.fromEntries(status.rows.map((r) => [r.status, r.n]));
  expect(counts, 'every job completed').to.deep.equal({ completed: jobs });
  const effects = await admin.query(`SELECT
      (SELECT count(*)::int FROM chaos.effects) AS effects,
      (SELECT count(*)::int FROM sluice.jobs j WHERE NOT EXISTS (SELECT 1 FROM chaos.effects e WHERE e.job_id = j.id)) AS missing`);
  expect(effects.rows[0], 'one effect per job').to.deep.equal({ effects: jobs, missing: 0 });
  const unexplained = await admin.query(`
    SELECT j.id, s.n AS starts, jsonb_array_length(j.errors) AS errors
    FROM sluice.jobs j JOIN (SELECT job_id, count(*)::int AS n FROM chaos.starts GROUP BY job_id) s ON s.job_id = j.id
    WHERE s.n > 1 + jsonb_array_length(j.errors) AND jsonb_array_length(j.errors) < 10`);
  expect(unexplained.rows, 'executions beyond one are explained by recorded rescues or retries').to.deep.equal([]);
  const figures = await admin.query(`SELECT
      (SELECT count(*)::int FROM chaos.starts) AS executions,
      (SELECT count(*)::int FROM sluice.jobs WHERE errors::text LIKE '%worker lost%') AS rescued`);
  const executions = figures.rows[0].executions;
  return { jobs, completed: counts.completed, executions, duplicateExecutions: executions - jobs, rescuedJobs: figures.rows[0].rescued };
}

export function report(f: Figures): void {
  if (process.env.SLUICE_CHAOS_REPORT) appendFileSync(process.env.SLUICE_CHAOS_REPORT, `${JSON.stringify(f)}\n`);
}
