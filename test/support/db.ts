// Real PostgreSQL for tests. Each test file takes a fresh database from createTestDatabase();
// fault tests take a whole throwaway cluster from startCluster(), which they may kill, restart
// or start with a small max_connections.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { LocalCluster } from '../../src/embedded/cluster.js';

const TEST_SETTINGS = { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: 200 };

let shared: LocalCluster | undefined;
const clusters = new Set<LocalCluster>();
const databases: string[] = [];
let counter = 0;

function adminUrl(): string {
  const url = process.env.SLUICE_TEST_DATABASE_URL ?? process.env.SLUICE_TEST_SHARED_URL;
  if (!url) throw new Error('the test PostgreSQL is not started: run the tests through mocha (npm test)');
  return url;
}

function tempDir(prefix: string): string {
  // the server runs as "postgres" when the tests run as root: it must be able to enter the folder
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

export async function startSharedServer(): Promise<void> {
  if (process.env.SLUICE_TEST_DATABASE_URL) return;
  shared = await LocalCluster.create({ dataDir: path.join(tempDir('sluice-test-'), 'data'), settings: TEST_SETTINGS });
  await shared.start();
  process.env.SLUICE_TEST_SHARED_URL = shared.url();
}

/** A new empty database on the run's server; dropped at the end of the run. */
export async function createTestDatabase(): Promise<string> {
  const name = `sluice_t_${process.pid}_${++counter}`;
  const client = new pg.Client({ connectionString: adminUrl() });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  databases.push(name);
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  return url.toString();
}

export interface ClusterSettings {
  max_connections?: number;
  [name: string]: string | number | undefined;
}

/** A private cluster for fault tests; stopped and deleted at the end of the run even on failure. */
export async function startCluster(settings: ClusterSettings = {}): Promise<LocalCluster> {
  const merged = Object.fromEntries(
    Object.entries({ ...TEST_SETTINGS, ...settings }).filter(([, v]) => v !== undefined),
  ) as Record<string, string | number>;
  const cluster = await LocalCluster.create({ dataDir: path.join(tempDir('sluice-fault-'), 'data'), settings: merged });
  clusters.add(cluster);
  await cluster.start();
  return cluster;
}

export async function destroyCluster(cluster: LocalCluster): Promise<void> {
  clusters.delete(cluster);
  await cluster.destroy();
  rmSync(path.dirname(cluster.dataDir), { recursive: true, force: true });
}

export async function stopAll(): Promise<void> {
  for (const c of [...clusters]) await destroyCluster(c).catch(() => undefined);
  if (shared) {
    await shared.destroy();
    rmSync(path.dirname(shared.dataDir), { recursive: true, force: true });
    shared = undefined;
  } else if (databases.length) {
    const client = new pg.Client({ connectionString: adminUrl() });
    await client.connect();
    for (const name of databases) await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
    await client.end();
  }
}

/** Polls until check() is truthy; fails with `what` after the deadline. For fault tests: no fixed sleeps. */
export async function waitFor<T>(what: string, check: () => Promise<T> | T, timeoutMs = 30_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
