// The common interface of the three systems under test. Each adapter runs in two places: the
// orchestrator (bench/run.ts) installs its schema and empties its tables between runs; a child
// process (bench/child.ts) enqueues and runs its worker, so every system's RSS and CPU are its own.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';

export type SystemName = 'sluice' | 'graphile' | 'pgboss';

/** A worker configuration measured as its own column: a system can have several. */
export type VariantId = 'sluice' | 'sluice-prefetch' | 'sluice-delete' | 'sluice-limited' | 'graphile' | 'graphile-batched' | 'pgboss';

export interface VariantInfo {
  id: VariantId;
  system: SystemName;
  /** Column header. */
  label: string;
  /** What the worker is configured with at this concurrency, for the output and the docs. */
  describe(concurrency: number): string;
}

/** What every benchmark job carries; `seq` identifies a job in the latency scenario. */
export interface BenchPayload {
  seq?: number;
}

export interface WorkerOptions {
  variant: VariantId;
  concurrency: number;
  /** Called synchronously at the start of every handler call, with the job's payload. */
  onJob(payload: BenchPayload): void;
  /** sluice only: worker.pollMs (the notify scenario's worker that hears no notifications). */
  pollMs?: number;
}

export interface RunningWorker {
  /** Graceful stop; resolves when the worker has let go of its connections. */
  stop(): Promise<void>;
}

export interface Producer {
  /** Enqueues `count` no-op jobs with the system's bulk API, `chunk` jobs per call. */
  addMany(count: number, chunk: number): Promise<void>;
  /**
   * Enqueues one job with the system's single-job API inside the caller's open transaction on
   * `tx`, so that the caller knows the moment of the COMMIT.
   */
  addOneIn(tx: pg.ClientBase, payload: BenchPayload): Promise<void>;
  close(): Promise<void>;
}

export interface SystemAdapter {
  readonly system: SystemName;
  /** Label of the system in tables (the variants have their own). */
  readonly label: string;
  /** The table that holds its jobs, schema-qualified (the pressure scenario watches its size and dead rows). */
  readonly jobsTable: string;
  /** Name and version of what is measured, for the results file. */
  version(): string;
  /** Creates the system's schema in an empty database (outside any timing). */
  install(url: string): Promise<void>;
  /** Empties the job tables, so every run starts from the same state. */
  reset(db: pg.ClientBase): Promise<void>;
  /** Jobs not yet finished (queued or running). */
  remaining(db: pg.ClientBase): Promise<number>;
  /** All jobs in the tables, finished or not. */
  total(db: pg.ClientBase): Promise<number>;
  /** A producer on its own connection(s), tagged application_name = bench-producer. */
  producer(url: string): Promise<Producer>;
  /** Loads the worker's code, so that start-up timings do not include module loading. */
  preload(): Promise<void>;
  startWorker(url: string, opts: WorkerOptions): Promise<RunningWorker>;
}

/** Name the benchmark's own connections carry; the connection sampler leaves them out. */
export const MONITOR_APP = 'bench-monitor';
export const PRODUCER_APP = 'bench-producer';

/** Adds application_name to a connection URL. */
export function withAppName(url: string, name: string): string {
  const u = new URL(url);
  u.searchParams.set('application_name', name);
  return u.toString();
}

export const TASK = 'noop';

/** Version of a peer system, read from its package.json under bench/node_modules (npm run bench:peers). */
export function packageVersion(name: string): string {
  const file = fileURLToPath(new URL(`../node_modules/${name}/package.json`, import.meta.url));
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
