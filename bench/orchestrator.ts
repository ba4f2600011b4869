// What bench/run.ts and its scenario modules (bench/notify.ts, bench/pressure.ts) share: progress
// lines, and the child processes that do the measuring (bench/child.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import type { ChildResult, ChildTask, FromChild, LongCheckpoint, ToChild } from './protocol.js';
import type { SystemAdapter, SystemName } from './systems/types.js';

export const benchDir = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(benchDir, '..');
const childScript = path.join(benchDir, 'child.ts');

const t0 = Date.now();
export function log(msg: string): void {
  const s = ((Date.now() - t0) / 1000).toFixed(0).padStart(4);
  process.stderr.write(`[bench ${s}s] ${msg}\n`);
}

/** What a scenario module needs from the run: the installed systems and the run's connections. */
export interface ScenarioEnv {
  adapter(system: SystemName): SystemAdapter;
  url(system: SystemName): string;
  /** The orchestrator's connection to the system's database. */
  admin(system: SystemName): pg.Client;
  /** Empties the system's job tables, then vacuums, analyses and checkpoints its database. */
  reset(system: SystemName): Promise<void>;
  /** A new connection that the run closes at its end, also after an error or Ctrl-C. */
  connect(url: string, applicationName: string): Promise<pg.Client>;
  /** A child fails when nothing moves for this long. */
  stallMs: number;
}

export function rotate<T>(items: T[], by: number): T[] {
  if (items.length === 0) return items;
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

const children = new Set<ChildProcess>();
let childNodeArgs: string[] = [];

/** --cpu-prof: every child from now on writes a V8 CPU profile into `dir`. */
export function profileChildrenInto(dir: string): void {
  childNodeArgs = ['--cpu-prof', `--cpu-prof-dir=${dir}`];
}

/** On error or Ctrl-C: no child outlives the run. */
export function killChildren(): void {
  for (const child of children) child.kill('SIGKILL');
}

export interface ChildHooks {
  /** Before the child is told to go (it has loaded and connected). */
  onReady?: () => Promise<void> | void;
  onCheckpoint?: (cp: LongCheckpoint) => void;
  /** A load run asks to enter phase `index` (phases.length: the end); it waits for this to resolve. */
  onPhase?: (index: number) => Promise<void> | void;
}

/** The last resort when a child's own stall detection fails: none for the long run, whose length is open. */
function hardLimitMs(task: ChildTask): number | undefined {
  const base = 30 * 60_000;
  switch (task.mode) {
    case 'long':
      return undefined;
    case 'load':
      return base + task.phases.reduce((sum, p) => sum + p.seconds * 1000, 0);
    default:
      return base;
  }
}

export function runChild<R extends ChildResult>(task: ChildTask, hooks: ChildHooks = {}): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    const child = spawn(process.execPath, [...childNodeArgs, '--expose-gc', '--import', 'tsx', childScript], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
      env: { ...process.env, NODE_ENV: 'production' },
    });
    children.add(child);
    child.stdout?.pipe(process.stderr);
    let result: R | undefined;
    let failure: string | undefined;
    const fail = (err: Error) => {
      failure = err.message;
      child.kill('SIGKILL');
    };
    const limit = hardLimitMs(task);
    const hardLimit =
      limit === undefined
        ? undefined
        : setTimeout(() => fail(new Error(`the child process ran for over ${Math.round(limit / 60_000)} minutes`)), limit);
    child.on('message', (msg: FromChild) => {
      if (msg.type === 'ready') {
        Promise.resolve(hooks.onReady?.()).then(() => child.send({ type: 'go' } satisfies ToChild), fail);
      } else if (msg.type === 'phase') {
        const { index } = msg;
        Promise.resolve(hooks.onPhase?.(index)).then(() => child.send({ type: 'phase-go', index } satisfies ToChild), fail);
      } else if (msg.type === 'checkpoint') {
        hooks.onCheckpoint?.(msg.checkpoint);
      } else if (msg.type === 'result') {
        result = msg.result as R;
      } else if (msg.type === 'error') {
        failure = msg.message;
      }
    });
    child.on('error', (err) => {
      failure ??= err.message;
    });
    child.on('exit', (code, signal) => {
      clearTimeout(hardLimit);
      children.delete(child);
      if (result && !failure) resolve(result);
      else reject(new Error(failure ?? `the ${task.system} child process exited (${signal ?? `code ${code}`}) without a result`));
    });
    child.send({ type: 'run', task } satisfies ToChild);
  });
}
