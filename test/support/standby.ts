// A primary and a streaming hot standby (made with pg_basebackup -R) from Debian's PostgreSQL 15,
// each in its own temp folder on a free loopback port: for tests of sluice against a read-only
// server and across a promotion. After promote() the `standby` server is the writable one.
import path from 'node:path';
import pg from 'pg';
import { freePort } from '../../src/embedded/cluster.js';
import { waitFor } from './db.js';
import { LoggedProcess, makeServerDir, makeTempRoot, removeDir, runToEnd, track, untrack, type Topology } from './processes.js';
import { PG15_BIN_DIR } from './tools.js';

// Fast and unsafe for a crash of the machine, not of the server; replication settings as production.
const SERVER_SETTINGS: Record<string, string | number> = {
  listen_addresses: '127.0.0.1',
  unix_socket_directories: '', // TCP only: nothing to collide with the machine's own server
  fsync: 'off',
  synchronous_commit: 'off',
  wal_level: 'replica',
  hot_standby: 'on',
  max_wal_senders: 10,
  max_connections: 100,
  dynamic_shared_memory_type: 'mmap', // in the data folder: a SIGKILLed server leaves nothing in /dev/shm
};

/** One query on a fresh connection; for checks and waits, not for load. */
export async function queryOnce<R extends pg.QueryResultRow = pg.QueryResultRow>(
  url: string,
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function inRecovery(url: string): Promise<boolean> {
  return (await queryOnce<{ r: boolean }>(url, 'SELECT pg_is_in_recovery() AS r'))[0].r;
}

/** A PostgreSQL 15 server of ours: the postmaster is our child, in its own process group. */
export class PgServer {
  private proc: LoggedProcess | undefined;
  readonly logFile: string;

  constructor(readonly name: string, readonly dataDir: string, readonly port: number, private readonly settings: Record<string, string | number>) {
    this.logFile = `${dataDir}.log`;
  }

  url(database = 'postgres', user = 'postgres'): string {
    return `postgres://${user}@127.0.0.1:${this.port}/${database}`;
  }

  get running(): boolean {
    return this.proc?.running ?? false;
  }

  /** Starts the server; resolves once it accepts connections (a standby: once it is consistent). */
  async start(): Promise<void> {
    if (this.running) return;
    const args = ['-D', this.dataDir, '-p', String(this.port)];
    for (const [k, v] of Object.entries(this.settings)) args.push('-c', `${k}=${v}`);
    const proc = new LoggedProcess(this.name, path.join(PG15_BIN_DIR, 'postgres'), args, { logFile: this.logFile, asServerUser: true });
    this.proc = proc;
    const outcome = await waitFor(`${this.name} to accept connections`, async () => {
      if (!proc.running) return 'exited';
      await queryOnce(this.url(), 'SELECT 1');
      return 'ready';
    }, 60_000, 100).catch((err: Error) => {
      throw proc.failure(err.message);
    });
    if (outcome === 'exited') throw proc.failure(`${this.name} exited during start`);
  }

  /** `fast` is a clean shutdown; `immediate` is a crash (recovery at the next start). */
  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.proc?.stop(mode === 'fast' ? 'SIGINT' : 'SIGQUIT');
  }

  /** SIGKILL of the postmaster and its backends: the server vanishes without a word to its clients. */
  async kill(): Promise<void> {
    await this.proc?.stop('SIGKILL');
  }

  /** For process exit: an immediate shutdown, which the server finishes on its own (and frees its shared memory). */
  killNow(): void {
    this.proc?.signal('SIGQUIT');
  }
}

export class StandbyPair implements Topology {
  private constructor(readonly root: string, readonly primary: PgServer, readonly standby: PgServer) {}

  static async start(settings: Record<string, string | number> = {}): Promise<StandbyPair> {
    const root = makeTempRoot('standby');
    const merged = { ...SERVER_SETTINGS, ...settings };
    const primary = new PgServer('primary', makeServerDir(path.join(root, 'primary')), await freePort(), merged);
    const standby = new PgServer('standby', makeServerDir(path.join(root, 'standby')), await freePort(), merged);
    const pair = new StandbyPair(root, primary, standby);
    track(pair);
    try {
      await pair.initPrimary();
      await primary.start();
      await pair.cloneStandby();
      await standby.start();
      await pair.waitForStreaming();
    } catch (err) {
      await pair.destroy();
      throw err;
    }
    return pair;
  }

  private async initPrimary(): Promise<void> {
    // --auth=trust also trusts replication connections from 127.0.0.1
    await runToEnd('initdb', path.join(PG15_BIN_DIR, 'initdb'),
      ['-D', this.primary.dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-locale', '--no-sync'],
      { logFile: path.join(this.root, 'initdb.log'), asServerUser: true });
  }

  private async cloneStandby(): Promise<void> {
    // -R writes standby.signal and primary_conninfo; -X stream keeps the WAL made during the copy
    await runToEnd('pg_basebackup', path.join(PG15_BIN_DIR, 'pg_basebackup'),
      ['-h', '127.0.0.1', '-p', String(this.primary.port), '-U', 'postgres', '-D', this.standby.dataDir,
        '-R', '-X', 'stream', '-c', 'fast', '--no-sync'],
      { logFile: path.join(this.root, 'basebackup.log'), asServerUser: true });
  }

  /** Resolves once the standby's WAL receiver is streaming from the primary. */
  async waitForStreaming(timeoutMs = 30_000): Promise<void> {
    await waitFor('the standby to stream from the primary', async () => {
      const rows = await queryOnce<{ status: string }>(this.standby.url(), 'SELECT status FROM pg_stat_wal_receiver');
      return rows[0]?.status === 'streaming';
    }, timeoutMs, 100);
  }

  /** Promotes the standby; resolves once it accepts writes. */
  async promote(): Promise<void> {
    await runToEnd('pg_ctl promote', path.join(PG15_BIN_DIR, 'pg_ctl'), ['promote', '-D', this.standby.dataDir, '-W'],
      { logFile: path.join(this.root, 'promote.log'), asServerUser: true });
    await waitFor('the promoted standby to leave recovery', async () => !(await inRecovery(this.standby.url())), 60_000, 100);
  }

  killNow(): void {
    this.primary.killNow();
    this.standby.killNow();
    removeDir(this.root);
    untrack(this);
  }

  async destroy(): Promise<void> {
    await Promise.all([this.primary.stop('immediate'), this.standby.stop('immediate')]);
    removeDir(this.root);
    untrack(this);
  }
}

/** A primary and a streaming standby; resolves once the standby streams. Extra settings apply to both. */
export function startStandbyPair(settings: Record<string, string | number> = {}): Promise<StandbyPair> {
  return StandbyPair.start(settings);
}
