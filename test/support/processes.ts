// Child processes and temp folders of the topology harnesses (standby pair, pgbouncer, Patroni).
// Each process runs in its own process group with its output in a log file, so that a kill takes
// its children too and a failure can quote the log. Every topology registers here and is killed
// and deleted at the end of the run (mocha teardown), on process exit, or on SIGINT/SIGTERM.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { processAlive } from './cli.js';

/** Something the harness started: a set of processes and the temp folder they live in. */
export interface Topology {
  /** Synchronous last resort for process exit: kill every process (PostgreSQL: immediate shutdown), delete the folder. */
  killNow(): void;
  /** Kills every process, waits for them to be gone, deletes the folder. */
  destroy(): Promise<void>;
}

const live = new Set<Topology>();
let handlersInstalled = false;

export function track(topology: Topology): void {
  installExitHandlers();
  live.add(topology);
}

export function untrack(topology: Topology): void {
  live.delete(topology);
}

/** For the mocha teardown: whatever a test left running. */
export async function destroyAllTopologies(): Promise<void> {
  for (const t of [...live]) await t.destroy().catch(() => t.killNow());
}

function killAllNow(): void {
  for (const t of live) t.killNow();
  live.clear();
}

// The processes run in their own process groups, so a Ctrl-C reaches only this process: kill them
// before letting the signal do its default (a `once` listener is gone when the signal is re-raised).
function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', killAllNow);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killAllNow();
      process.kill(process.pid, signal);
    });
  }
}

let cachedUser: { uid: number; gid: number } | undefined | null = null;

/** PostgreSQL (and pgbouncer) refuse to run as root: servers run as `postgres` when we are root. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (cachedUser !== null) return cachedUser;
  if (process.getuid?.() !== 0) return (cachedUser = undefined);
  const id = (flag: string) => spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' });
  const uid = id('-u');
  if (uid.status !== 0) throw new Error('the tests run as root and need a "postgres" user to run servers as');
  return (cachedUser = { uid: Number(uid.stdout.trim()), gid: Number(id('-g').stdout.trim()) });
}

/** A new folder under the system temp folder that the server user may enter. */
export function makeTempRoot(kind: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `sluice-${kind}-`));
  chmodSync(dir, 0o755);
  return dir;
}

/** A folder owned by the server user (0700 by default, as PostgreSQL wants its data folder). */
export function makeServerDir(dir: string, mode = 0o700): string {
  mkdirSync(dir, { recursive: true, mode });
  chmodSync(dir, mode);
  const user = serverUser();
  if (user) chownSync(dir, user.uid, user.gid);
  return dir;
}

export function removeDir(dir: string): void {
  // a process killed a moment ago may still be writing in it: retry briefly
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
}

export function logTail(file: string, lines = 25): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export interface SpawnOptions {
  /** stdout and stderr are appended here; the process keeps the file open even if we die. */
  logFile: string;
  /** Run as the server user when the tests run as root. */
  asServerUser?: boolean;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** A child process in its own process group, with its output in a log file. */
export class LoggedProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  readonly logFile: string;
  private done = false;
  private exitDescription = '';

  constructor(readonly name: string, command: string, args: string[], opts: SpawnOptions) {
    this.logFile = opts.logFile;
    const fd = openSync(opts.logFile, 'a');
    try {
      this.child = spawn(command, args, {
        stdio: ['ignore', fd, fd],
        detached: true, // its own process group: killing the group takes its children too
        env: opts.env ?? process.env,
        cwd: opts.cwd,
        ...(opts.asServerUser ? serverUser() : undefined),
      });
    } finally {
      closeSync(fd); // the child has its own copy
    }
    this.exited = new Promise((resolve) => {
      const finish = (what: string) => {
        if (this.done) return;
        this.done = true;
        this.exitDescription = what;
        resolve();
      };
      this.child.once('error', (err) => finish(`could not run ${command}: ${err.message}`));
      this.child.once('exit', (code, signal) => finish(signal ? `killed by ${signal}` : `exited with code ${code}`));
    });
  }

  get running(): boolean {
    return !this.done;
  }

  get exitCode(): number | null {
    return this.child.exitCode;
  }

  /** Signals the process, or its whole process group. */
  signal(signal: NodeJS.Signals, wholeGroup = false): void {
    if (this.done || this.child.pid === undefined) return;
    try {
      process.kill(wholeGroup ? -this.child.pid : this.child.pid, signal);
    } catch {
      // already gone
    }
  }

  /** SIGKILL of the process and everything in its group. */
  killNow(): void {
    this.signal('SIGKILL', true);
  }

  /** Sends `signal` to the process (SIGKILL: to its group), and SIGKILL to the group after `graceMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 15_000): Promise<void> {
    if (this.done) return;
    this.signal(signal, signal === 'SIGKILL');
    if (await this.exitedWithin(graceMs)) return;
    this.killNow();
    if (!(await this.exitedWithin(10_000))) throw new Error(`${this.name} (pid ${this.child.pid}) survived SIGKILL`);
  }

  async exitedWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    try {
      return await Promise.race([this.exited.then(() => true as const), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** An error about this process, with why it ended (if it did) and the tail of its log. */
  failure(what: string): Error {
    const ended = this.done ? ` (${this.name} ${this.exitDescription})` : '';
    return new Error(`${what}${ended}; log ${this.logFile}:\n${logTail(this.logFile)}`);
  }
}

/** Runs a command to its end within `timeoutMs`; rejects with its log tail if it fails. */
export async function runToEnd(name: string, command: string, args: string[], opts: SpawnOptions & { timeoutMs?: number }): Promise<void> {
  const proc = new LoggedProcess(name, command, args, opts);
  if (!(await proc.exitedWithin(opts.timeoutMs ?? 60_000))) {
    proc.killNow();
    await proc.exited;
    throw proc.failure(`${name} did not finish within ${opts.timeoutMs ?? 60_000} ms`);
  }
  if (proc.exitCode !== 0) throw proc.failure(`${name} failed`);
}

/**
 * The pid of the running postmaster of `dataDir`, for servers that are not our children (Patroni
 * starts PostgreSQL in a session of its own). The pid in postmaster.pid must be a live process
 * whose command line names this data folder, so a stale file can never make us signal someone
 * else's server.
 */
export function postmasterOf(dataDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 1 || !processAlive(pid)) return undefined;
  const cmdline = readProc(pid, 'cmdline')?.split('\0') ?? [];
  return cmdline.includes(dataDir) ? pid : undefined;
}

/** Sends `signal` to the process group of `pid` (a postmaster's group holds its backends), and to pid itself. */
export function signalGroupOf(pid: number, signal: NodeJS.Signals): void {
  const group = processGroupOf(pid);
  const ours = processGroupOf(process.pid);
  for (const target of group !== undefined && group !== ours ? [-group, pid] : [pid]) {
    try {
      process.kill(target, signal);
    } catch {
      // already gone
    }
  }
}

/** The process group, read from /proc/<pid>/stat (field 5, after the parenthesised name). */
function processGroupOf(pid: number): number | undefined {
  const stat = readProc(pid, 'stat');
  const fields = stat?.slice(stat.lastIndexOf(')') + 2).split(' ');
  const group = Number(fields?.[2]);
  return Number.isInteger(group) && group > 1 ? group : undefined;
}

function readProc(pid: number, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
}
