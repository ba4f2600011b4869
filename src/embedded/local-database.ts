// The zero-setup database: when database.url is empty, `sluice start` runs a PostgreSQL of its
// own in database.embeddedDir (persistent across restarts). Other commands run in another
// terminal (`sluice add`, `sluice status`, ...) find it through the postmaster.pid file that
// PostgreSQL itself keeps in the data folder: its 4th line is the port. So nothing needs
// configuring as long as both run from the same folder (or share SLUICE_EMBEDDED_DIR).
//
// The server listens on 127.0.0.1 only, with trust authentication for the "postgres" user: a
// local development database, not one to expose.
import { accessSync, constants, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import pg from 'pg';
import { freePort, LocalCluster, type ClusterOptions } from './cluster.js';

/** The port tried first, so that a psql URL printed once keeps working. */
export const DEFAULT_EMBEDDED_PORT = 54329;
export const EMBEDDED_DATABASE = 'postgres';

export interface RunningLocalDatabase {
  url: string;
  port: number;
  /** postmaster pid. */
  pid: number;
  dataDir: string;
}

export interface LocalDatabase extends RunningLocalDatabase {
  /** False when a server was already running on this data folder and is reused (and not stopped). */
  owned: boolean;
  /** Stops the server when this process started it (fast shutdown: clients disconnected). */
  stop(): Promise<void>;
}

export interface StartLocalOptions {
  dataDir: string;
  /** Preferred port; when busy a free one is picked (other commands read it from postmaster.pid). */
  port?: number;
  settings?: Record<string, string | number>;
}

function urlFor(port: number): string {
  return `postgres://postgres@127.0.0.1:${port}/${EMBEDDED_DATABASE}`;
}

/**
 * The embedded server running on `dataDir`, read from its postmaster.pid; undefined when none
 * runs there (no file, a stale file, or a folder this user cannot read).
 */
export function findLocalDatabase(dataDir: string): RunningLocalDatabase | undefined {
  const dir = path.resolve(dataDir);
  let lines: string[];
  try {
    lines = readFileSync(path.join(dir, 'postmaster.pid'), 'utf8').split('\n');
  } catch {
    return undefined;
  }
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || pid <= 0 || !Number.isInteger(port) || port <= 0) return undefined;
  if (!processAlive(pid)) return undefined;
  return { url: urlFor(port), port, pid, dataDir: dir };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/**
 * When sluice runs as root the server runs as the "postgres" user, which must be able to enter
 * every folder above the data folder. Fails early with the folder to fix.
 */
function checkServerCanEnter(dataDir: string): void {
  if (process.getuid?.() !== 0) return;
  const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  for (let dir = path.dirname(dataDir); ; dir = path.dirname(dir)) {
    const st = statSync(dir);
    const enterable = st.uid === uid ? (st.mode & 0o100) !== 0 : (st.mode & 0o001) !== 0;
    if (!enterable) {
      throw new Error(
        `the embedded PostgreSQL runs as the "postgres" user (sluice runs as root), which cannot enter ${dir}: ` +
          `run "chmod o+x ${dir}", or set database.embeddedDir (SLUICE_EMBEDDED_DIR) to a folder it can reach`,
      );
    }
    if (path.dirname(dir) === dir) return;
  }
}

/**
 * Starts the embedded PostgreSQL on `dataDir` (initialised on first use), or reuses the one
 * already running there. Resolves once it accepts connections.
 */
export async function startLocalDatabase(opts: StartLocalOptions): Promise<LocalDatabase> {
  const dataDir = path.resolve(opts.dataDir);
  const existing = findLocalDatabase(dataDir);
  if (existing && (await canConnect(existing.url))) {
    return { ...existing, owned: false, stop: async () => undefined };
  }
  mkdirSync(path.dirname(dataDir), { recursive: true });
  if (existsSync(dataDir)) {
    try {
      accessSync(dataDir, constants.R_OK);
    } catch {
      throw new Error(`the embedded PostgreSQL data folder ${dataDir} is not readable by this user`);
    }
  }
  checkServerCanEnter(dataDir);
  const preferred = opts.port ?? DEFAULT_EMBEDDED_PORT;
  const port = (await portFree(preferred)) ? preferred : await freePort();
  const clusterOptions: ClusterOptions = {
    dataDir,
    port,
    settings: opts.settings,
    // Own process group, so that Ctrl-C in the terminal reaches only sluice, which then drains
    // its jobs before it stops the server (honoured once cluster.ts supports it).
    detached: true,
  };
  const cluster = await LocalCluster.create(clusterOptions);
  await cluster.start();
  const pid = findLocalDatabase(dataDir)?.pid ?? 0;
  return {
    url: cluster.url(EMBEDDED_DATABASE),
    port,
    pid,
    dataDir,
    owned: true,
    stop: () => cluster.stop('fast'),
  };
}

/** The one-line explanation for commands run with no database configured and none running. */
export function noDatabaseMessage(dataDir: string): string {
  return (
    `no database configured and no embedded PostgreSQL running in ${path.resolve(dataDir)}: ` +
    `set DATABASE_URL (or database.url in a config file), or run "sluice start" from this folder first`
  );
}
