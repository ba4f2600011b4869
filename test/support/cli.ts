// Running the real `sluice` command line as a child process, from the TypeScript sources (no
// build): `node --import tsx test/support/cli-entry.ts ...`. Every child is tracked and killed by killAllCli().
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { waitFor } from './db.js';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const cliPath = path.join(root, 'test', 'support', 'cli-entry.ts');
// an absolute loader URL, so the CLI also runs from another working directory
const tsxLoader = pathToFileURL(path.join(root, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;

export type Env = Record<string, string | undefined>;

const live = new Set<ChildProcess>();

/** The parent's environment without anything that configures sluice, plus `env`. */
function childEnv(env: Env): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === 'DATABASE_URL' || (k.startsWith('SLUICE_') && !k.startsWith('SLUICE_TEST_'))) continue;
    base[k] = v;
  }
  base.SLUICE_LOG_FORMAT = 'json';
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete base[k];
    else base[k] = v;
  }
  return base;
}

function spawnCli(args: string[], env: Env, cwd?: string, input?: string): ChildProcess {
  const child = spawn(process.execPath, ['--import', tsxLoader, cliPath, ...args], {
    cwd: cwd ?? root,
    env: childEnv(env),
    stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  if (input !== undefined) child.stdin!.end(input);
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: Env;
  cwd?: string;
  /** Killed (SIGKILL) after this long; default 30 s. */
  timeoutMs?: number;
  /** Written to the command's standard input. */
  input?: string;
}

/** Runs one command to completion. */
export function runCli(args: string[], opts: RunOptions = {}): Promise<CliResult> {
  const child = spawnCli(args, opts.env ?? {}, opts.cwd, opts.input);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Runs a command that must succeed and print JSON; fails with its stderr otherwise. */
export async function runJson<T = any>(args: string[], opts: RunOptions = {}): Promise<T> {
  const r = await runCli([...args, '--json'], opts);
  if (r.code !== 0) throw new Error(`sluice ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** A long-running command (`sluice start`), with its output parsed as it comes. */
export class CliProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly logs: LogLine[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitCode: number | null | undefined;

  constructor(args: string[], opts: { env?: Env; cwd?: string } = {}) {
    this.child = spawnCli(args, opts.env ?? {}, opts.cwd);
    let partial = '';
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.stdout += d;
      partial += d;
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        try {
          this.logs.push(JSON.parse(line) as LogLine);
        } catch {
          // not a log line
        }
      }
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitCode = code;
        resolve({ code, signal });
      });
    });
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  /** The first log line that matches; fails early when the process exits first. */
  async waitForLog(what: string, match: (l: LogLine) => boolean, timeoutMs = 60_000): Promise<LogLine> {
    return waitFor<LogLine | undefined>(
      what,
      () => {
        const found = this.logs.find(match);
        if (found) return found;
        if (!this.running) throw new Error(`sluice exited (${this.exitCode}) first; output:\n${this.output()}`);
        return undefined;
      },
      timeoutMs,
    ) as Promise<LogLine>;
  }

  /** The base URL of the HTTP endpoints, from the start banner. */
  async httpUrl(timeoutMs = 60_000): Promise<string> {
    const line = await this.waitForLog('the HTTP endpoints to be announced', (l) => typeof l.http === 'object', timeoutMs);
    return (line.http as { metrics: string }).metrics.replace(/\/metrics$/, '');
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) this.child.kill(sig);
  }

  output(): string {
    return `--- stdout\n${this.stdout}\n--- stderr\n${this.stderr}`;
  }
}

export function startCli(args: string[], opts: { env?: Env; cwd?: string } = {}): CliProcess {
  return new CliProcess(args, opts);
}

/** Kills every CLI child still running (SIGKILL) and waits for them to be gone. */
export async function killAllCli(): Promise<void> {
  const children = [...live];
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGKILL');
        }),
    ),
  );
}

/** The postmaster pid of the server running on a data folder, if any. */
export function postmasterPid(dataDir: string): number | undefined {
  const file = path.join(dataDir, 'postmaster.pid');
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').split('\n')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** True while the process exists and is not a zombie (an orphan nobody reaped is gone for us). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/** Stops (SIGQUIT, immediate) a server left running on a data folder, e.g. after a SIGKILLed CLI. */
export async function killPostmaster(dataDir: string): Promise<void> {
  const pid = postmasterPid(dataDir);
  if (!pid || !processAlive(pid)) return;
  try {
    process.kill(pid, 'SIGQUIT');
  } catch {
    return;
  }
  await waitFor(`postgres ${pid} to exit`, () => !processAlive(pid), 30_000);
}

/** Sum of a Prometheus counter over all its label sets. */
export function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(\\{[^}]*\\})? ([0-9.eE+-]+)$`).exec(line);
    if (m) sum += Number(m[2]);
  }
  return sum;
}
