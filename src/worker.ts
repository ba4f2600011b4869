// The worker, composed in one place: pool + listener -> pipeline (claim -> execute -> complete),
// with heartbeat and rescuer beside it. Start and graceful stop live here; signals and the
// command line live in cli.ts.
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import { filter, interval, merge, Subject, tap } from 'rxjs';
import { isResolvedConfig, loadConfig } from './config/load.js';
import type { ConfigInput, SluiceConfig } from './config/schema.js';
import { createPool, endPool, poolOptions, withClient } from './db/pool.js';
import { errorSummary } from './db/errors.js';
import { channelFor } from './db/sql.js';
import { loadQueries, type Queries } from './db/queries.js';
import { claimJobs, type ClaimedJob } from './jobs/claim.js';
import { Completer } from './jobs/complete.js';
import { addJob, addJobs, type JobSpec } from './jobs/enqueue.js';
import { executeJob, jobDb, RunningJob, type ExecuteDeps } from './jobs/execute.js';
import { Listener } from './listener.js';
import { createLogger, type Logger } from './log.js';
import { Heartbeat, registerWorker, deregisterWorker, type WorkerIdentity } from './maintenance/heartbeat.js';
import { Pruner } from './maintenance/pruner.js';
import { Vacuumer } from './maintenance/vacuumer.js';
import { Rescuer } from './maintenance/rescuer.js';
import { Metrics } from './metrics.js';
import { checkBudget, readBudget } from './budget.js';
import { currentVersion, expectedVersion, migrate } from './migrate.js';
import { DueTimes, Pipeline } from './pipeline.js';
import { loadTasks, normalizeTasks, type TaskList } from './tasks.js';
import { backoffMs } from './util/backoff.js';
import { sleep, TIMED_OUT, withTimeout } from './util/time.js';

export interface WorkerOptions {
  /**
   * The configuration: one returned by loadConfig, taken as it is; or config values, which win
   * over the config file and the environment.
   */
  config?: ConfigInput | SluiceConfig;
  /** Config file (YAML or JSON); defaults to $SLUICE_CONFIG. */
  configFile?: string;
  /** Handlers; when omitted they are loaded from worker.tasks. */
  tasks?: TaskList;
  logger?: Logger;
  /** Apply migrations at start (otherwise the schema must already be at this version). */
  migrate?: boolean;
}

export type WorkerState = 'new' | 'starting' | 'running' | 'stopping' | 'stopped';

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export class Worker {
  readonly config: SluiceConfig;
  readonly log: Logger;
  readonly metrics = new Metrics();
  readonly identity: WorkerIdentity;
  state: WorkerState = 'new';
  private pool: pg.Pool | undefined;
  private queries: Queries;
  private listener: Listener | undefined;
  private pipeline: Pipeline | undefined;
  private heartbeat: Heartbeat | undefined;
  private rescuer: Rescuer | undefined;
  private pruner: Pruner | undefined;
  private vacuumer: Vacuumer | undefined;
  private completer: Completer | undefined;
  private dueTimes: DueTimes | undefined;
  private readonly running = new Map<string, RunningJob>();
  private readonly stopRequested = new Subject<void>();
  private readonly stopSignal = new AbortController();
  private stopping: Promise<void> | undefined;

  constructor(private readonly opts: WorkerOptions = {}) {
    this.config = isResolvedConfig(opts.config) ? opts.config : loadConfig({ file: opts.configFile, overrides: opts.config });
    this.log = opts.logger ?? createLogger(this.config.log);
    this.queries = loadQueries(this.config.database.schema);
    const { worker, database } = this.config;
    this.identity = {
      id: `${os.hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
      host: os.hostname(),
      pid: process.pid,
      queues: worker.queues,
      concurrency: worker.concurrency,
      poolSize: database.poolSize,
      version: VERSION,
    };
  }

  /** The pool the worker uses; also for enqueueing through the same bounded connections. */
  get db(): pg.Pool {
    if (!this.pool) throw new Error('the worker is not started');
    return this.pool;
  }

  addJob(job: JobSpec): Promise<string> {
    return addJob(this.db, job, this.config.database.schema);
  }

  addJobs(jobs: JobSpec[]): Promise<string[]> {
    return addJobs(this.db, jobs, this.config.database.schema);
  }

  /** Connects, checks the schema, registers, and starts taking jobs. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`the worker cannot start: it is ${this.state}`);
    this.state = 'starting';
    const { config, log } = this;
    if (!config.database.url) throw new Error('database.url is not set (DATABASE_URL, a config file, or the embedded database via `sluice start`)');
    const tasks = this.opts.tasks ? normalizeTasks(this.opts.tasks, 'tasks option') : await loadTasks(config.worker.tasks);
    // application_name names the worker so operators can count its connections per process
    const pool = createPool(poolOptions(config, `sluice ${this.identity.id}`.slice(0, 63)), log);
    this.pool = pool;
    try {
      await this.prepareDatabase(pool);
      if (this.stopping) throw new Error('the worker was stopped while starting');
      await this.checkConnectionBudget(pool);
    } catch (err) {
      await endPool(pool, 1000);
      this.state = 'stopped';
      throw err;
    }

    const listener = new Listener({
      url: config.database.url,
      channel: channelFor(config.database.schema),
      applicationName: `sluice-listener ${this.identity.id}`.slice(0, 63),
      connectTimeoutMs: config.database.connectionTimeoutMs,
      checkIntervalMs: config.database.listenerCheckMs,
      checkTimeoutMs: config.database.listenerCheckMs,
      log: log.child({ part: 'listener' }),
    });
    this.listener = listener;

    this.completer = new Completer(pool, this.queries, log);
    const deps: ExecuteDeps = {
      pool,
      db: jobDb(pool),
      queries: this.queries,
      completer: this.completer,
      tasks,
      defaultTimeoutMs: config.worker.jobTimeoutMs,
      retryBaseMs: config.worker.retryBaseMs,
      retryMaxMs: config.worker.retryMaxMs,
      stuckAfterMs: 5000,
      log,
      metrics: this.metrics,
    };
    const pipeline = new Pipeline({
      concurrency: config.worker.concurrency,
      claim: async (limit) => {
        const jobs = await claimJobs(pool, this.queries, config.worker.queues, limit, this.identity.id);
        this.metrics.claimed(jobs.length);
        return jobs;
      },
      run: (job) => this.run(job, deps),
      log,
    });
    this.pipeline = pipeline;
    this.heartbeat = new Heartbeat({
      pool,
      queries: this.queries,
      identity: this.identity,
      intervalMs: config.worker.heartbeatMs,
      held: () => {
        const ids: string[] = [];
        const tokens: string[] = [];
        for (const r of this.running.values()) {
          if (r.abortedBy) continue;
          ids.push(r.job.id);
          tokens.push(r.job.token);
        }
        return { ids, tokens };
      },
      onLost: (jobs) => {
        for (const j of jobs) {
          const cause = j.status === 'cancelled' ? 'cancelled' : 'lost';
          this.running.get(j.id)?.abort(cause, cause === 'cancelled' ? 'the job was cancelled' : `the job is no longer held by this worker (now ${j.status ?? 'deleted'})`);
        }
      },
      log,
    });
    const heartbeat = this.heartbeat;
    this.rescuer = new Rescuer({
      pool,
      queries: this.queries,
      rescueAfterMs: config.worker.rescueAfterMs,
      healthySince: () => heartbeat.healthySince,
      log,
      metrics: this.metrics,
    });
    this.pruner = new Pruner({
      pool,
      queries: this.queries,
      keepCompletedMs: config.worker.keepCompletedMs,
      keepFailedMs: config.worker.keepFailedMs,
      everyMs: config.worker.pruneEveryMs,
      log,
    });
    this.vacuumer = new Vacuumer({
      pool,
      queries: this.queries,
      deadRows: config.worker.vacuumDeadRows,
      checkEveryMs: 5000,
      timeoutMs: 600_000,
      log,
    });
    this.metrics.attach({
      inFlight: () => pipeline.inFlight,
      pool: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
      listenerConnected: () => listener.connected,
      queueStats: () => this.queueStats(),
    });

    const queues = new Set(config.worker.queues);
    const dueTimes = new DueTimes(() => pipeline.wake());
    this.dueTimes = dueTimes;
    const events = listener.events$;
    this.stopRequested.subscribe(() => dueTimes.clear());
    events.subscribe((e) => {
      if (e.type === 'jobs' || e.type === 'cancel') this.metrics.notification();
      if (e.type === 'cancel') this.running.get(e.id)?.abort('cancelled', 'the job was cancelled');
      if (e.type === 'connected' && this.state === 'running') this.metrics.listenerReconnected();
    });
    const wakeups = merge(
      // jobs runnable now in one of our queues; jobs due later arm a timer
      events.pipe(
        filter((e) => e.type === 'jobs' && queues.has(e.queue)),
        tap((e) => {
          if (e.type === 'jobs' && e.runAt) dueTimes.add(e.runAt, this.heartbeat!.clockOffsetMs);
        }),
        filter((e) => e.type === 'jobs' && e.due),
      ),
      // after every (re)connect: notifications sent while disconnected are lost
      events.pipe(filter((e) => e.type === 'connected')),
      interval(config.worker.pollMs),
    );

    await listener.start();
    if (this.stopping) return;
    this.heartbeat.start();
    this.rescuer.start();
    this.pruner.start();
    this.vacuumer.start();
    pipeline.start(wakeups);
    this.state = 'running';
    log.info(
      { workerId: this.identity.id, queues: config.worker.queues, concurrency: config.worker.concurrency, poolSize: config.database.poolSize, tasks: [...tasks.keys()] },
      `worker started: at most ${config.database.poolSize + 1} connections`,
    );
  }

  /**
   * Graceful stop: no new claims; running jobs get worker.shutdownGraceMs to finish; the rest are
   * aborted and put back to queued without spending an attempt; then everything is closed.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  /** Running, listening, and the database answered the last heartbeat in time. */
  get ready(): boolean {
    return this.state === 'running' && (this.listener?.connected ?? false) && (this.heartbeat?.healthy ?? false);
  }

  /** Jobs running now and claimed jobs waiting for a slot (always 0). */
  stats(): { inFlight: number; buffered: number; poolTotal: number; poolIdle: number; poolWaiting: number; listenerConnected: boolean } {
    return {
      inFlight: this.pipeline?.inFlight ?? 0,
      buffered: this.pipeline?.buffered ?? 0,
      poolTotal: this.pool?.totalCount ?? 0,
      poolIdle: this.pool?.idleCount ?? 0,
      poolWaiting: this.pool?.waitingCount ?? 0,
      listenerConnected: this.listener?.connected ?? false,
    };
  }

  private async doStop(): Promise<void> {
    this.stopRequested.next();
    this.stopSignal.abort();
    if (this.state === 'new' || this.state === 'stopped' || !this.pipeline) {
      // not started, or still starting: start() sees `stopping` and gives up
      if (this.state !== 'starting') this.state = 'stopped';
      return;
    }
    this.state = 'stopping';
    const { log, config } = this;
    const pipeline = this.pipeline!;
    pipeline.stopClaiming();
    log.info({ inFlight: pipeline.inFlight, graceMs: config.worker.shutdownGraceMs }, 'stopping: no new jobs; waiting for running jobs');
    const graceOver = (await withTimeout(pipeline.whenIdle(), config.worker.shutdownGraceMs)) === TIMED_OUT;
    if (graceOver && this.running.size) {
      const left = [...this.running.values()].filter((r) => !r.abortedBy && !r.handlerDone);
      for (const r of left) r.abort('shutdown', 'the worker is shutting down');
      await this.release(left);
      await withTimeout(pipeline.whenIdle(), 5000);
    }
    await this.completer!.drain(5000);
    await this.heartbeat!.stop();
    await this.rescuer!.stop();
    await this.pruner!.stop();
    await this.vacuumer!.stop();
    pipeline.close();
    this.dueTimes?.clear();
    if (this.running.size === 0) {
      await deregisterWorker(this.pool!, this.queries, this.identity.id).catch((err) =>
        log.warn({ err: errorSummary(err) }, 'could not deregister; the worker row will be cleaned up by a rescuer'),
      );
    } else {
      log.warn({ jobs: [...this.running.keys()] }, 'handlers still running after the abort; exiting without them (their jobs were requeued)');
    }
    await this.listener!.stop();
    if (!(await endPool(this.pool!, 5000))) log.warn('database pool did not close in time (a handler still holds a connection)');
    this.state = 'stopped';
    log.info('worker stopped');
  }

  private async release(left: RunningJob[]): Promise<void> {
    if (!left.length) return;
    try {
      const res = await withClient(this.pool!, (c) =>
        this.queries.release_jobs.run(c, { ids: left.map((r) => r.job.id), tokens: left.map((r) => r.job.token) }),
      );
      this.log.info({ jobs: res.rows.map((r) => String(r.id)) }, 'unfinished jobs put back to queued without spending an attempt');
    } catch (err) {
      this.log.warn({ err: errorSummary(err) }, 'could not put unfinished jobs back; rescue will requeue them');
    }
  }

  /**
   * Runs one job in a pipeline slot. The slot frees when the handler has settled, while its
   * outcome is still being written, so claiming overlaps writing; but never with more than
   * `concurrency` outcomes waiting, so a slow database slows claiming instead of piling up jobs.
   * The job stays in `running` (the set the heartbeat vouches for) until its outcome is written.
   */
  private async run(job: ClaimedJob, deps: ExecuteDeps): Promise<void> {
    const running = new RunningJob(job);
    this.running.set(job.id, running);
    let written: Promise<void>;
    try {
      ({ written } = await executeJob(running, deps));
    } catch (err) {
      this.running.delete(job.id);
      throw err;
    }
    running.handlerDone = true;
    const done = written
      .catch((err) => this.log.error({ err: errorSummary(err), jobId: job.id }, 'writing the outcome failed'))
      .finally(() => this.running.delete(job.id));
    if (deps.completer.backlog > this.config.worker.concurrency) await done;
  }

  /** Schema check and registration; with database.retryOnStartup, retried until they succeed. */
  private async prepareDatabase(pool: pg.Pool): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.checkSchema(pool);
        await registerWorker(pool, this.queries, this.identity);
        return;
      } catch (err) {
        if (!this.config.database.retryOnStartup || this.stopping) throw err;
        const delay = backoffMs(attempt + 1, { baseMs: 500, maxMs: 30_000, jitter: 'full' });
        const u = new URL(this.config.database.url);
        this.log.warn(
          { err: errorSummary(err), database: `${u.hostname}:${u.port || 5432}${u.pathname}`, retryInMs: Math.round(delay) },
          'cannot start yet: database unreachable or not ready; retrying',
        );
        // stop() ends the wait at once
        await sleep(delay, this.stopSignal.signal);
      }
    }
  }

  /** Warns (or, with database.strictBudget, refuses to start) when poolSize + 1 does not fit. */
  private async checkConnectionBudget(pool: pg.Pool): Promise<void> {
    const { config, log } = this;
    const budget = await readBudget(pool, config.database.schema, { rescueAfterMs: config.worker.rescueAfterMs });
    const check = checkBudget(budget, config.database.poolSize, { ownId: this.identity.id });
    if (!check.fits && config.database.strictBudget) throw new Error(`${check.message} (database.strictBudget is on)`);
    log[check.fits ? 'info' : 'warn']({ needed: check.needed, headroom: check.headroom }, check.message);
  }

  private async checkSchema(pool: pg.Pool): Promise<void> {
    const schema = this.config.database.schema;
    if (this.opts.migrate) {
      const r = await migrate(pool, schema);
      if (r.applied.length) this.log.info({ applied: r.applied, schema }, 'migrations applied');
      return;
    }
    const have = await currentVersion(pool, schema);
    const want = expectedVersion(schema);
    if (have < want) {
      throw new Error(`schema "${schema}" is at version ${have}, this sluice needs ${want}: run "sluice migrate" first`);
    }
  }

  private async queueStats() {
    const res = await withClient(this.db, (c) => this.queries.queue_depth.run(c, {}));
    return res.rows.map((r) => ({ queue: r.queue, status: r.status, count: r.n, oldestRunnableSeconds: r.oldest }));
  }
}

export async function runWorker(opts: WorkerOptions = {}): Promise<Worker> {
  const worker = new Worker(opts);
  await worker.start();
  return worker;
}
