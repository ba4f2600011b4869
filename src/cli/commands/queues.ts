// Queue control across every worker: `sluice queue list|limit|pause|resume`, and the recurring
// jobs of the configuration: `sluice cron list`.
import type { Command } from 'commander';
import { listCron } from '../../admin/cron.js';
import { listQueues, pauseQueue, resumeQueue, setQueueLimits, type QueueLimits, type QueueSummary } from '../../admin/queues.js';
import { common, intArg, loadCliConfig, usageError, withDatabase, type CommonOptions } from '../context.js';
import { formatAge, print, printJson, table } from '../output.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "20/1s", "100/m", "5/500ms": starts per window. */
export function parseRate(text: string): { rateLimit: number; ratePeriodMs: number } {
  const m = /^\s*(\d+)\s*\/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)\s*$/.exec(text);
  const bad = () => usageError(`--rate ${JSON.stringify(text)}: give starts per duration, e.g. 20/1s, 100/m, 5/500ms (units ms, s, m, h)`);
  if (!m) throw bad();
  const rateLimit = Number(m[1]);
  const ratePeriodMs = (m[2] === undefined ? 1 : Number(m[2])) * UNITS[m[3]!]!;
  if (!Number.isSafeInteger(rateLimit) || rateLimit < 1 || !(ratePeriodMs > 0)) throw bad();
  return { rateLimit, ratePeriodMs };
}

function formatPeriod(ms: number): string {
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms % size === 0) return `${ms / size === 1 ? '' : ms / size}${unit}`;
  return `${ms}ms`;
}

function describeLimits(q: Pick<QueueSummary, 'concurrency' | 'keyConcurrency' | 'rateLimit' | 'ratePeriodMs'>): string {
  const parts = [];
  if (q.concurrency !== null) parts.push(`concurrency ${q.concurrency}`);
  if (q.keyConcurrency !== null) parts.push(`key concurrency ${q.keyConcurrency}`);
  if (q.rateLimit !== null) parts.push(`rate ${q.rateLimit}/${formatPeriod(q.ratePeriodMs)}`);
  return parts.length ? parts.join(', ') : 'no limits';
}

interface LimitOptions extends CommonOptions {
  concurrency?: number;
  keyConcurrency?: number;
  rate?: string;
}

export function register(program: Command): void {
  const queue = program.command('queue').description('limits and pause of queues, across every worker (stored in the database)');
  common(queue.command('list').description('each queue: limits, paused, queued and running jobs, oldest runnable job')).action((opts: CommonOptions) =>
    cmdList(opts),
  );
  common(
    queue
      .command('limit')
      .description('set all limits of a queue at once (a limit not given is removed); every worker follows within a second')
      .argument('<name>', 'queue name')
      .option('--concurrency <n>', 'at most this many jobs of the queue running at once, across all workers', intArg('--concurrency', 1))
      .option('--key-concurrency <n>', 'at most this many running jobs per concurrency key', intArg('--key-concurrency', 1))
      .option('--rate <n/duration>', 'at most n starts in any window of this length, e.g. 20/1s, 100/m'),
  ).action((name: string, opts: LimitOptions) => cmdLimit(name, opts));
  common(queue.command('pause').description('start no new job of the queue on any worker; running jobs finish, jobs can still be added').argument('<name>', 'queue name')).action(
    (name: string, opts: CommonOptions) => cmdPause(name, true, opts),
  );
  common(queue.command('resume').description('start jobs of a paused queue again').argument('<name>', 'queue name')).action((name: string, opts: CommonOptions) =>
    cmdPause(name, false, opts),
  );

  const cron = program.command('cron').description('recurring jobs of the configuration (its cron section)');
  common(cron.command('list').description('each recurring job: schedule, time zone, next tick, last tick and its job')).action((opts: CommonOptions) =>
    cmdCronList(opts),
  );
}

function queueName(name: string): string {
  if (name.trim() === '' || name.length > 128) throw usageError(`queue name must be non-blank and at most 128 characters, got ${JSON.stringify(name)}`);
  return name;
}

async function cmdList(opts: CommonOptions): Promise<void> {
  const config = loadCliConfig(opts);
  const queues = await withDatabase(config, (pool, schema) => listQueues(pool, schema));
  if (opts.json) return printJson(queues);
  if (!queues.length) return print('no queues: no settings and no unfinished jobs');
  print(
    table(
      ['QUEUE', 'LIMITS', 'PAUSED', 'QUEUED', 'RUNNABLE', 'RUNNING', 'OLDEST RUNNABLE'],
      queues.map((q) => [
        q.name,
        describeLimits(q),
        q.paused ? 'yes' : 'no',
        q.queued,
        q.runnable,
        q.running,
        q.oldestRunnableAgeMs === null ? '-' : formatAge(q.oldestRunnableAgeMs / 1000),
      ]),
    ),
  );
}

async function cmdLimit(name: string, opts: LimitOptions): Promise<void> {
  const limits: QueueLimits = { concurrency: opts.concurrency ?? null, keyConcurrency: opts.keyConcurrency ?? null, rateLimit: null };
  if (opts.rate !== undefined) Object.assign(limits, parseRate(opts.rate));
  const config = loadCliConfig(opts);
  const queue = queueName(name);
  await withDatabase(config, (pool, schema) => setQueueLimits(pool, schema, queue, limits));
  const summary = {
    queue,
    concurrency: limits.concurrency ?? null,
    keyConcurrency: limits.keyConcurrency ?? null,
    rateLimit: limits.rateLimit ?? null,
    ratePeriodMs: limits.ratePeriodMs ?? 1000,
  };
  if (opts.json) return printJson(summary);
  print(`queue ${queue}: ${describeLimits(summary)}`);
}

async function cmdPause(name: string, pause: boolean, opts: CommonOptions): Promise<void> {
  const config = loadCliConfig(opts);
  const queue = queueName(name);
  await withDatabase(config, (pool, schema) => (pause ? pauseQueue : resumeQueue)(pool, schema, queue));
  if (opts.json) return printJson({ queue, paused: pause });
  print(`queue ${queue}: ${pause ? 'paused (running jobs finish; no new job starts on any worker)' : 'resumed'}`);
}

async function cmdCronList(opts: CommonOptions): Promise<void> {
  const config = loadCliConfig(opts);
  if (!config.cron.length) {
    if (opts.json) return printJson([]);
    return print('no recurring jobs: the configuration has no cron entries');
  }
  const entries = await withDatabase(config, (pool, schema) => listCron(pool, schema, config.cron));
  if (opts.json) return printJson(entries);
  print(
    table(
      ['NAME', 'SCHEDULE', 'TIMEZONE', 'TASK', 'NEXT TICK', 'LAST TICK', 'LAST JOB'],
      entries.map((e) => [e.name, e.schedule, e.timezone, e.task, e.nextTick, e.lastTick ?? '-', e.lastJobId ? `${e.lastJobId} (${e.lastJobStatus ?? 'pruned'})` : '-']),
    ),
  );
}
