// One job at a time: `sluice add`, `jobs`, `show`, `retry`, `cancel`.
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { cancelJob, deleteJob, getJob, JOB_STATUSES, listJobs, parseJobId, retryJob, runJobNow, type JobDetail, type JobStatus, type JobSummary } from '../../admin/jobs.js';
import { addJob, type JobSpec } from '../../enqueue.js';
import { common, intArg, loadCliConfig, usageError, withDatabase, type CommonOptions } from '../context.js';
import { fields, indent, print, printJson, table, truncate } from '../output.js';

export function register(program: Command): void {
  common(
    program
      .command('add')
      .description('enqueue a job and print its id')
      .argument('<task>', 'task name (the handler module name)')
      .option('-p, --payload <json>', 'payload, a JSON object; @FILE reads it from a file, - from standard input', undefined)
      .option('-q, --queue <queue>', 'queue (default "default")')
      .option('--run-at <iso>', 'run no earlier than this time (ISO 8601)')
      .option('--priority <n>', 'priority, lower runs first (default 0)', intArg('--priority', 0))
      .option('--max-attempts <n>', 'attempts before the job fails for good (default 25)', intArg('--max-attempts', 1))
      .option('-k, --key <key>', 'job key: at most one unfinished job per key (a duplicate returns its id)')
      .option('--concurrency-key <key>', "groups jobs for the queue's key concurrency limit (a customer id, say)"),
  ).action((task: string, opts: AddOptions) => cmdAdd(task, opts));

  common(
    program
      .command('jobs')
      .description('list jobs, newest first')
      .addOption(new Option('-s, --status <status>', 'only jobs in this state').choices(JOB_STATUSES))
      .option('-q, --queue <queue>', 'only jobs of this queue')
      .option('-t, --task <task>', 'only jobs of this task')
      .option('-n, --limit <n>', 'at most this many (default 20)', intArg('--limit', 1)),
  ).action((opts: JobsOptions) => cmdJobs(opts));

  common(program.command('show').description('one job with its payload, result and errors').argument('<id>', 'job id')).action(
    (id: string, opts: CommonOptions) => cmdShow(id, opts),
  );

  common(
    program.command('retry').description('run a failed, cancelled or completed job again now (a queued one: run-now)').argument('<id>', 'job id'),
  ).action((id: string, opts: CommonOptions) => cmdChange('retry', id, opts));

  common(
    program.command('run-now').description('run a queued job now instead of at its run_at').argument('<id>', 'job id'),
  ).action((id: string, opts: CommonOptions) => cmdChange('run-now', id, opts));

  common(
    program.command('cancel').description('cancel a queued or running job (a running handler is aborted)').argument('<id>', 'job id'),
  ).action((id: string, opts: CommonOptions) => cmdChange('cancel', id, opts));
  common(
    program.command('delete').description('delete a job that is not running (a running one: cancel it first)').argument('<id>', 'job id'),
  ).action((id: string, opts: CommonOptions) => cmdChange('delete', id, opts));
}

function jobIdArg(id: string): string {
  try {
    return parseJobId(id);
  } catch (err) {
    throw usageError((err as Error).message);
  }
}

interface AddOptions extends CommonOptions {
  payload?: string;
  queue?: string;
  runAt?: string;
  priority?: number;
  maxAttempts?: number;
  key?: string;
  concurrencyKey?: string;
}

/** --payload JSON, @FILE (the file's contents) or - (standard input). */
async function payloadText(arg: string): Promise<string> {
  if (arg === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  if (arg.startsWith('@')) {
    try {
      return readFileSync(arg.slice(1), 'utf8');
    } catch (err) {
      throw usageError(`--payload ${arg}: cannot read ${arg.slice(1)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  return arg;
}

function parsePayload(text: string, arg: string): Record<string, unknown> {
  const from = arg === '-' ? ' (from standard input)' : arg.startsWith('@') ? ` (from ${arg.slice(1)})` : '';
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw usageError(`--payload${from} is not valid JSON: ${(err as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw usageError(`--payload${from} must be a JSON object, got ${Array.isArray(parsed) ? 'an array' : parsed === null ? 'null' : typeof parsed}`);
  }
  return parsed as Record<string, unknown>;
}

async function cmdAdd(task: string, opts: AddOptions): Promise<void> {
  const payload = opts.payload === undefined ? {} : parsePayload(await payloadText(opts.payload), opts.payload);
  const job: JobSpec = { task, payload };
  if (opts.queue !== undefined) job.queue = opts.queue;
  if (opts.runAt !== undefined) {
    const d = new Date(opts.runAt);
    if (Number.isNaN(d.getTime())) throw usageError(`--run-at is not a valid date: ${JSON.stringify(opts.runAt)} (use ISO 8601, e.g. 2030-01-31T12:00:00Z)`);
    job.runAt = d;
  }
  if (opts.priority !== undefined) job.priority = opts.priority;
  if (opts.maxAttempts !== undefined) job.maxAttempts = opts.maxAttempts;
  if (opts.key !== undefined) job.jobKey = opts.key;
  if (opts.concurrencyKey !== undefined) job.concurrencyKey = opts.concurrencyKey;
  const config = loadCliConfig(opts);
  const id = await withDatabase(config, (pool, schema) => addJob(pool, job, schema));
  if (opts.json) return printJson({ id });
  print(id);
}

interface JobsOptions extends CommonOptions {
  status?: JobStatus;
  queue?: string;
  task?: string;
  limit?: number;
}

async function cmdJobs(opts: JobsOptions): Promise<void> {
  const config = loadCliConfig(opts);
  const jobs = await withDatabase(config, (pool, schema) =>
    listJobs(pool, schema, { status: opts.status, queue: opts.queue, task: opts.task, limit: opts.limit ?? 20 }),
  );
  if (opts.json) return printJson(jobs);
  if (!jobs.length) return print('no jobs match');
  print(
    table(
      ['ID', 'QUEUE', 'TASK', 'STATUS', 'ATTEMPTS', 'RUN AT', 'FINISHED', 'LAST ERROR'],
      jobs.map((j: JobSummary) => [
        j.id,
        j.queue,
        j.task,
        j.status,
        `${j.attempts}/${j.maxAttempts}`,
        j.runAt,
        j.finishedAt,
        j.lastError ? truncate(j.lastError, 80) : null,
      ]),
    ),
  );
}

async function cmdShow(id: string, opts: CommonOptions): Promise<void> {
  const jobId = jobIdArg(id);
  const config = loadCliConfig(opts);
  const job = await withDatabase(config, (pool, schema) => getJob(pool, schema, jobId));
  if (opts.json) return printJson(job);
  printJob(job);
}

function printJob(j: JobDetail): void {
  const rows: [string, string][] = [
    ['id', j.id],
    ['task', j.task],
    ['queue', j.queue],
    ['status', j.status],
    ['attempts', `${j.attempts} of ${j.maxAttempts}`],
    ['priority', String(j.priority)],
    ['job key', j.jobKey ?? '-'],
    ['run at', j.runAt],
    ['created', j.createdAt],
    ['started', j.startedAt ?? '-'],
    ['finished', j.finishedAt ?? '-'],
    ...(j.status === 'running' ? [['locked by', `${j.lockedBy} since ${j.lockedAt}`] as [string, string]] : j.lockedBy ? [['last ran on', j.lockedBy] as [string, string]] : []),
    ['payload', JSON.stringify(j.payload)],
    ['result', j.result === null || j.result === undefined ? '-' : JSON.stringify(j.result)],
  ];
  print(fields(rows));
  if (j.errors.length) {
    print(`errors (most recent ${j.errors.length}):`);
    for (const e of j.errors) print(`  attempt ${e.attempt} at ${e.at}: ${e.error.split('\n')[0]}`);
  }
  if (j.lastError) {
    print('last error:');
    print(indent(j.lastError));
  }
}

const CHANGES = {
  retry: { apply: retryJob, done: 'queued to run now' },
  'run-now': { apply: runJobNow, done: 'will run now' },
  cancel: { apply: cancelJob, done: 'cancelled' },
  delete: { apply: deleteJob, done: 'deleted' },
} as const;

async function cmdChange(action: keyof typeof CHANGES, id: string, opts: CommonOptions): Promise<void> {
  const jobId = jobIdArg(id);
  const config = loadCliConfig(opts);
  const change = await withDatabase(config, (pool, schema) => CHANGES[action].apply(pool, schema, jobId));
  if (opts.json) return printJson(change);
  print(`job ${change.id} ${CHANGES[action].done}`);
}
