// Task handlers: what a job runs. Loaded from a folder (one module per task, named after the file)
// or from one module exporting a map, or given directly through the API.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type pg from 'pg';
import { SluiceError } from './errors.js';
import type { Logger } from './observe/logger.js';

export interface JobInfo {
  id: string;
  task: string;
  queue: string;
  /** 1 for the first run. */
  attempt: number;
  maxAttempts: number;
  priority: number;
  runAt: Date;
  createdAt: Date;
  jobKey: string | null;
}

export interface JobDb {
  /** One statement on a pooled connection. */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, params?: unknown[]): Promise<pg.QueryResult<R>>;
  /** Several statements on one borrowed connection, returned when fn settles. */
  withClient<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T>;
  /** fn inside BEGIN/COMMIT on one borrowed connection; rolled back when fn throws. */
  transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T>;
}

export interface JobContext {
  job: JobInfo;
  /** Fires on timeout, cancellation, loss of the job, or shutdown; signal.reason says which. */
  signal: AbortSignal;
  log: Logger;
  db: JobDb;
  /**
   * Runs fn in a transaction and completes the job in the same transaction, with fn's return value
   * as the result: the handler's writes and the job's completion commit together or not at all.
   */
  completeInTransaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T>;
}

export type TaskHandler<P = any, R = unknown> = (payload: P, ctx: JobContext) => Promise<R> | R;

export interface TaskDefinition {
  handler: TaskHandler;
  /** Time limit of one attempt; overrides worker.jobTimeoutMs (0: none). */
  timeoutMs?: number;
}

export type TaskList = Record<string, TaskHandler | TaskDefinition>;

export function normalizeTasks(list: TaskList, origin: string): Map<string, TaskDefinition> {
  const tasks = new Map<string, TaskDefinition>();
  for (const [name, value] of Object.entries(list)) {
    tasks.set(name, toDefinition(value, `${origin}: task "${name}"`));
  }
  return tasks;
}

function toDefinition(value: unknown, where: string): TaskDefinition {
  if (typeof value === 'function') return { handler: value as TaskHandler };
  if (value && typeof value === 'object' && typeof (value as TaskDefinition).handler === 'function') {
    const def = value as TaskDefinition;
    if (def.timeoutMs !== undefined && (!Number.isInteger(def.timeoutMs) || def.timeoutMs < 0)) {
      throw new Error(`${where} has an invalid timeoutMs ${String(def.timeoutMs)} (an integer >= 0)`);
    }
    return { handler: def.handler, timeoutMs: def.timeoutMs };
  }
  throw new Error(`${where} must be a function or an object with a handler function`);
}

const MODULE_EXT = new Set(['.js', '.mjs', '.cjs', '.ts', '.mts']);

/**
 * Loads handlers from `location`: a folder whose files each export a handler (default export, or
 * `handler`, with an optional `timeoutMs`), the task named after the file; or one module whose
 * default export (or named exports) map task names to handlers.
 */
export async function loadTasks(location: string): Promise<Map<string, TaskDefinition>> {
  const abs = path.resolve(location);
  if (!existsSync(abs)) {
    throw new Error(`worker.tasks: ${location} does not exist (a folder of task modules, or one module)`);
  }
  if (statSync(abs).isFile()) {
    const mod = await importModule(abs);
    const list = (mod.default && typeof mod.default === 'object' ? mod.default : mod) as TaskList;
    return normalizeTasks(list, abs);
  }
  const tasks = new Map<string, TaskDefinition>();
  for (const file of readdirSync(abs).sort()) {
    const ext = path.extname(file);
    if (!MODULE_EXT.has(ext) || file.endsWith('.d.ts') || file.includes('.test.')) continue;
    const name = path.basename(file, ext);
    if (tasks.has(name)) throw new Error(`worker.tasks: two modules define task "${name}" in ${abs}`);
    const mod = await importModule(path.join(abs, file));
    const exported = mod.default ?? (mod.handler ? { handler: mod.handler, timeoutMs: mod.timeoutMs } : undefined);
    if (exported === undefined) {
      throw new SluiceError(
        'usage',
        `task module ${path.join(abs, file)} exports no handler: it must export its handler as the default export (or as "handler"), ` +
          `e.g. \`export default async function (payload, ctx) { return { done: true }; }\`, optionally with \`export const timeoutMs = 30000;\``,
      );
    }
    const def = toDefinition(
      typeof exported === 'function' && mod.timeoutMs !== undefined ? { handler: exported, timeoutMs: mod.timeoutMs } : exported,
      `${path.join(abs, file)}`,
    );
    tasks.set(name, def);
  }
  return tasks;
}

async function importModule(file: string): Promise<Record<string, any>> {
  try {
    return (await import(pathToFileURL(file).href)) as Record<string, any>;
  } catch (err) {
    const hint = /\.m?ts$/.test(file) ? ' (TypeScript task modules need a loader such as tsx, or compile them to .js)' : '';
    const where = err instanceof SyntaxError ? syntaxErrorLocation(file) : undefined;
    throw new SluiceError('usage', `cannot load task module ${file}${hint}: ${(err as Error).message}${where ? ` at ${where}` : ''}`);
  }
}

/**
 * Where a syntax error is, as `file:line: source line`. Node's import() says what is wrong but
 * not where; `node --check` says where (the source goes through stdin, so that it is checked as
 * the module kind its extension says, whatever package.json is nearby).
 */
function syntaxErrorLocation(file: string): string | undefined {
  const inputType = file.endsWith('.cjs') ? 'commonjs' : 'module';
  const check = spawnSync(process.execPath, [`--input-type=${inputType}`, '--check'], { input: readFileSync(file), encoding: 'utf8', timeout: 10_000 });
  const lines = (check.stderr ?? '').split('\n');
  const at = lines.findIndex((l) => /^\[stdin\]:\d+/.test(l));
  if (at < 0) return undefined;
  return `${file}:${lines[at]!.slice('[stdin]:'.length)}: ${lines[at + 1]?.trim() ?? ''}`;
}
