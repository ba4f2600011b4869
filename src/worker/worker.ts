// The worker, composed in one place: the pool and the listener; a runner per queue with the
// claimer and completer they share; wake-ups routed from notifications; the lease; maintenance
// services; metrics and logs on the events. start() builds and starts the parts in order, stop()
// ends them in reverse. The path of a job does not come back here: notification -> wake-ups ->
// runner -> claimer -> execute -> completer.
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import { isResolvedConfig, loadConfig } from '../config/load.js';
import { queueNames, queueSlots } from '../config/queues.js';
import type { ConfigInput, SluiceConfig } from '../config/schema.js';
import { errorSummary } from '../db/errors.js';
import { createPool, endPool, poolOptions, primaryLocatorOf, withClient } from '../db/pool.js';
import type { PrimaryLocator } from '../db/primary.js';
import { loadQueries, type Queries } from '../db/queries.js';
import { channelFor } from '../db/sql.js';
import { addJob, addJobs, type JobSpec } from '../enqueue.js';
import { SluiceError } from '../errors.js';
import type { DatabaseHealth } from '../admin/health.js';
import { HealthCheck } from '../maintenance/health-check.js';
import { maintenanceServices } from '../maintenance/index.js';
import type { Service } from '../maintenance/service.js';
import { Listener, PollingOnly, type Notifications } from '../notify/listener.js';
import { WakeLocks } from '../notify/wake-locks.js';
import { Wakeups } from '../notify/wakeups.js';
import { Events } from '../observe/events.js';
import { logEvents } from '../observe/job-log.js';
import { createLogger, type Logger } from '../observe/logger.js';
import { Metrics } from '../observe/metrics.js';
import { CronScheduler } from '../cron/scheduler.js';
import { cronStore } from '../cron/store.js';
import { activeTracer, traceClaim } from '../observe/tracing.js';
import { claimJobs } from '../runner/claim.js';
import { Claimer } from '../runner/claimer.js';
import { ControlledQueues } from '../runner/controlled-queues.js';
import { Completer } from '../runner/completer.js';
import { executeJob, jobDb } from '../runner/execute.js';
import { QueueRunner } from '../runner/queue-runner.js';
import { Runners } from '../runner/runners.js';
import { loadTasks, normalizeTasks, type TaskList } from '../tasks.js';
import { TIMED_OUT, withTimeout } from '../util/time.js';
import { deregisterWorker, Lease, type WorkerIdentity } from './lease.js';
import { checkConnectionBudget, prepareDatabase } from './startup.js';

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

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** The parts a started worker is made of. */
interface Parts {
  pool: pg.Pool;
  listener: Notifications;
  completer: Completer;
  claimer: Claimer;
  controlled: ControlledQueues;
  runners: Runners;
  wakeups: Wakeups;
  wakeLocks: WakeLocks;
  lease: Lease;
  healthCheck: HealthCheck;
  services: Service[];
}

export class Worker {
  readonly config: SluiceConfig;
  readonly log: Logger;
  readonly events = new Events();
  readonly metrics = new Metrics();
  readonly identity: WorkerIdentity;
  state: WorkerState = 'new';
  private readonly queries: Queries;
  private pool: pg.Pool | undefined;
  private parts: Parts | undefined;
  private readonly stopSignal = new AbortController();
  private stopping: Promise<void> | undefined;

  constructor(private readonly opts: WorkerOptions = {}) {
    this.config = isResolvedConfig(opts.config) ? opts.config : loadConfig({ file: opts.configFile, overrides: opts.config });
    this.log = opts.logger ?? createLogger(this.config.log);
    // a transaction pooler hands each transaction to any server connection: no named statements
    this.queries = loadQueries(this.config.database.schema, { preparedStatements: this.config.database.pooler !== 'transaction' });
    const { worker, database } = this.config;
    this.identity = {
      id: `${os.hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
      host: os.hostname(),
      pid: process.pid,
      queues: queueNames(worker.queues),
      // known once the handlers are loaded, at start
      tasks: [],
      // slots of all its queues
      concurrency: queueSlots(worker.queues, worker.concurrency).reduce((n, q) => n + q.concurrency, 0),
      poolSize: database.poolSize,
      version: VERSION,
    };
    this.metrics.observe(this.events);
    logEvents(this.events, this.log);
  }

  /** The pool the worker uses; also for enqueueing through the same bounded connections. */
  get db(): pg.Pool {
    if (!this.pool) throw new SluiceError('worker_state', 'the worker is not started');
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
    if (this.state !== 'new') throw new SluiceError('worker_state', `the worker cannot start: it is ${this.state}`);
    this.state = 'starting';
    const { config, log, queries, identity } = this;
    if (!config.database.url) {
      throw new SluiceError('usage', 'database.url is not set (DATABASE_URL, a config file, or the embedded database via `sluice start`)');
    }
    const tasks = this.opts.tasks ? normalizeTasks(this.opts.tasks, 'tasks option') : await loadTasks(config.worker.tasks);
    if (tasks.size === 0) {
      const where = this.opts.tasks ? 'the tasks option is empty' : `worker.tasks (${config.worker.tasks}) holds no task modules`;
      throw new SluiceError('usage', `no task handlers: ${where}; a worker claims only jobs of tasks it has a handler for, so it would never run anything`);
    }
    identity.tasks = [...tasks.keys()].sort();
    for (const entry of config.cron) {
      if (!tasks.has(entry.task)) {
        throw new SluiceError('usage', `cron entry ${entry.name}: task ${JSON.stringify(entry.task)} has no handler in this worker (handlers: ${identity.tasks.join(', ')})`);
      }
    }
    // application_name names the worker so operators can count its connections per process
    const pool = createPool(poolOptions(config, `sluice ${identity.id}`.slice(0, 63)), log);
    this.pool = pool;
    try {
      const startup = { pool, queries, config, identity, log };
      await prepareDatabase({ ...startup, migrate: this.opts.migrate ?? false, signal: this.stopSignal.signal });
      if (this.stopping) throw new SluiceError('worker_state', 'the worker was stopped while starting');
      await checkConnectionBudget(startup);
    } catch (err) {
      await endPool(pool, 1000);
      this.state = 'stopped';
      throw err;
    }

    const parts = this.compose(pool, tasks);
    this.parts = parts;
    await parts.listener.start();
    if (this.stopping) return;
    await parts.controlled.refresh();
    parts.lease.start();
    for (const s of parts.services) s.start();
    parts.runners.start();
    parts.wakeups.start();
    this.state = 'running';
    log.info(
      {
        workerId: identity.id,
        // slots per queue; concurrency is the default of queues without their own
        queues: Object.fromEntries(queueSlots(config.worker.queues, config.worker.concurrency).map((q) => [q.name, q.concurrency])),
        concurrency: config.worker.concurrency,
        poolSize: config.database.poolSize,
        tasks: [...tasks.keys()],
      },
      `worker started: at most ${config.database.poolSize + 1} connections`,
    );
  }

  private compose(pool: pg.Pool, tasks: Awaited<ReturnType<typeof loadTasks>>): Parts {
    const { config, log, queries, identity, events } = this;
    const listener = this.notifications(pool);
    const completer = new Completer(pool, queries, log, { deleteCompleted: config.worker.keepCompletedMs === 0 });
    const controlled = new ControlledQueues({ pool, queries, log });
    const claimer = new Claimer({
      claim: async (demands) => {
        const tracer = activeTracer();
        const claim = () => claimJobs(pool, queries, demands, identity.tasks, identity.id, controlled.current);
        const claimed = tracer ? await traceClaim(tracer, demands.map((d) => d.queue), claim, (c) => c.jobs.length) : await claim();
        events.emit({ type: 'claim', jobs: claimed.jobs.length });
        return claimed;
      },
      log,
    });
    const execute = {
      pool,
      db: jobDb(pool),
      queries,
      completer,
      tasks,
      defaultTimeoutMs: config.worker.jobTimeoutMs,
      retry: { baseMs: config.worker.retryBaseMs, maxMs: config.worker.retryMaxMs },
      stuckAfterMs: 5000,
      log,
      events,
    };
    // runners is assigned below; the locks call back into it only once the runners have started
    let runners: Runners | undefined;
    const wakeLocks = new WakeLocks({
      session: () => listener.session(),
      take: async (db, queue) => (await queries.wake_lock_take.run(db, { queue })).rows[0]!.state,
      release: async (db, queue) => void (await queries.wake_lock_release.run(db, { queue })),
      lookAgain: (queue) => runners?.lookAgain(queue),
      log: log.child({ part: 'wake-locks' }),
    });
    const slots = queueSlots(config.worker.queues, config.worker.concurrency);
    const queues = slots.map(
      (q) =>
        new QueueRunner({
          queue: q.name,
          concurrency: q.concurrency,
          claimer,
          execute: (running) => executeJob(running, execute),
          backlog: () => completer.backlog,
          // one claim's worth of outcomes may wait: a completion batch then carries as many jobs as a
          // claim does, instead of each slot waiting for its own small batch to commit
          maxBacklog: identity.concurrency + config.worker.prefetch,
          heldRetryMs: Math.min(250, config.worker.pollMs),
          prefetch: config.worker.prefetch,
          claimWindowMs: config.worker.claimWindowMs,
          jobsBeforeWindow: async (windowMs) =>
            (await queries.jobs_before_window.run(pool, { queue: q.name, tasks: identity.tasks, windowMs })).rows[0]!.waiting,
          mayPrefetch: () => !controlled.current.has(q.name),
          wakeLock: { waiting: (found) => wakeLocks.waiting(q.name, found), looking: () => wakeLocks.looking(q.name) },
          log,
        }),
    );
    runners = new Runners(queues, { pool, queries, log });
    const lease = new Lease({
      pool,
      queries,
      identity,
      intervalMs: config.worker.heartbeatMs,
      held: () => runners.held(),
      onLost: (jobs) => {
        for (const j of jobs) {
          if (j.status === 'cancelled') runners.abort(j.id, 'cancelled', 'the job was cancelled');
          else runners.abort(j.id, 'lost', `the job is no longer held by this worker (now ${j.status ?? 'deleted'})`);
        }
      },
      log,
    });
    const wakeups = new Wakeups({
      listener,
      runners,
      pollMs: config.worker.pollMs,
      clockOffsetMs: () => lease.clockOffsetMs,
      cancelHint: (id) => lease.hint(id),
      settingsHint: (queue) =>
        void controlled.refresh().then((changed) => {
          for (const q of new Set(queue ? [queue, ...changed] : changed)) runners.settingsChanged(q);
        }),
      events,
    });
    const healthCheck = new HealthCheck({ pool, schema: config.database.schema, thresholds: config.health, everyMs: config.health.checkEveryMs, log });
    const services = [...maintenanceServices({ pool, queries, config, events, log, healthySince: () => lease.healthySince }), healthCheck];
    if (config.cron.length) {
      services.push(new CronScheduler({ entries: config.cron, store: cronStore(pool, queries), clockOffsetMs: () => lease.clockOffsetMs, log: log.child({ part: 'cron' }) }));
    }
    this.metrics.attach({
      inFlight: () => runners.inFlight,
      prefetched: () => runners.prefetched,
      pool: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
      listenerConnected: () => listener.connected,
      listenerFailedAttempts: () => listener.failedAttempts,
      primary: () => {
        const locator = primaryLocatorOf(pool);
        return locator && { reachable: locator.reachable, failovers: locator.failovers };
      },
      queueStats: () => this.queueStats(),
      health: () => ({ health: healthCheck.latest, warnings: healthCheck.warnings }),
    });
    return { pool, listener, completer, claimer, controlled, runners, wakeups, wakeLocks, lease, healthCheck, services };
  }

  /**
   * The LISTEN connection: to database.listenUrl, else database.url; none behind a transaction
   * pooler without a listenUrl (LISTEN would land on a shared server connection), where the poll
   * alone finds new jobs.
   */
  private notifications(pool: pg.Pool): Notifications {
    const { config, log, identity } = this;
    const { listenUrl, pooler, url } = config.database;
    if (pooler === 'transaction' && !listenUrl) {
      log.warn(
        { pollMs: config.worker.pollMs },
        `database.pooler is transaction and database.listenUrl is not set: LISTEN cannot work through a transaction pooler, so new jobs are found by polling every ${config.worker.pollMs} ms (worker.pollMs, 100 or more); set database.listenUrl to a direct connection to PostgreSQL for instant pickup`,
      );
      return new PollingOnly();
    }
    return new Listener({
      url: listenUrl || url,
      channel: channelFor(config.database.schema),
      applicationName: `sluice-listener ${identity.id}`.slice(0, 63),
      connectTimeoutMs: config.database.connectionTimeoutMs,
      checkIntervalMs: config.database.listenerCheckMs,
      checkTimeoutMs: config.database.listenerCheckMs,
      primaryLocator: !listenUrl || listenUrl === url ? primaryLocatorOf(pool) : undefined,
      log: log.child({ part: 'listener' }),
    });
  }

  /**
   * Graceful stop: no new claims; running jobs get worker.shutdownGraceMs to finish; the rest are
   * aborted and put back to queued without spending an attempt; then everything is closed.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  /** Running, listening (unless polling by design), a primary known, and the database answered the last heartbeat in time. */
  get ready(): boolean {
    const parts = this.parts;
    if (this.state !== 'running' || !parts) return false;
    const listening = parts.listener.connected || parts.listener.pollingOnly;
    return listening && parts.lease.healthy && (primaryLocatorOf(parts.pool)?.reachable ?? true);
  }

  /** The database health check's last reading (undefined before the first, or when the last failed). */
  health(): DatabaseHealth | undefined {
    return this.parts?.healthCheck.latest;
  }

  /** The health thresholds passed at the last check: /readyz shows them, still ready. */
  healthWarnings(): string[] {
    return this.parts?.healthCheck.warnings.map((w) => w.message) ?? [];
  }

  /** Jobs running now, claimed jobs waiting inside mergeMap (always 0), and jobs claimed ahead (worker.prefetch). */
  stats(): {
    inFlight: number;
    buffered: number;
    prefetched: number;
    poolTotal: number;
    poolIdle: number;
    poolWaiting: number;
    listenerConnected: boolean;
    listenerError?: string;
    /** Set while a multi-host database.url has no writable primary: why. */
    primaryError?: string;
  } {
    const locator = this.pool && primaryLocatorOf(this.pool);
    return {
      primaryError: locator && !locator.reachable ? noPrimaryReason(locator) : undefined,
      inFlight: this.parts?.runners.inFlight ?? 0,
      buffered: this.parts?.runners.buffered ?? 0,
      prefetched: this.parts?.runners.prefetched ?? 0,
      poolTotal: this.pool?.totalCount ?? 0,
      poolIdle: this.pool?.idleCount ?? 0,
      poolWaiting: this.pool?.waitingCount ?? 0,
      // polling by design counts as listening: /readyz must not fail for it
      listenerConnected: (this.parts?.listener.connected || this.parts?.listener.pollingOnly) ?? false,
      listenerError: this.parts?.listener.lastError,
    };
  }

  private async doStop(): Promise<void> {
    this.stopSignal.abort();
    const parts = this.parts;
    if (this.state === 'new' || this.state === 'stopped' || !parts) {
      // not started, or still starting: start() sees `stopping` and gives up
      if (this.state !== 'starting') this.state = 'stopped';
      return;
    }
    this.state = 'stopping';
    const { log, config } = this;
    const { runners } = parts;
    runners.stopClaiming();
    parts.claimer.stop();
    await runners.releasePrefetched();
    log.info({ inFlight: runners.inFlight, graceMs: config.worker.shutdownGraceMs }, 'stopping: no new jobs; waiting for running jobs');
    if ((await withTimeout(runners.whenIdle(), config.worker.shutdownGraceMs)) === TIMED_OUT && runners.holding) {
      await runners.abortAndRelease();
      await withTimeout(runners.whenIdle(), 5000);
    }
    await parts.completer.drain(5000);
    await parts.lease.stop();
    for (const s of [...parts.services].reverse()) await s.stop();
    parts.wakeups.stop();
    runners.close();
    parts.wakeLocks.stop();
    if (runners.holding === 0) {
      await deregisterWorker(parts.pool, this.queries, this.identity.id).catch((err) =>
        log.warn({ err: errorSummary(err) }, 'could not deregister; the worker row will be cleaned up by a rescuer'),
      );
    } else {
      log.warn({ jobs: runners.holdingIds() }, 'handlers still running after the abort; exiting without them (their jobs were requeued)');
    }
    await parts.listener.stop();
    if (!(await endPool(parts.pool, 5000))) log.warn('database pool did not close in time (a handler still holds a connection)');
    this.state = 'stopped';
    log.info('worker stopped');
  }

  private async queueStats() {
    const res = await withClient(this.db, (c) => this.queries.queue_depth.run(c, {}));
    return res.rows.map((r) => ({ queue: r.queue, status: r.status, count: r.n, oldestRunnableSeconds: r.oldest }));
  }
}

function noPrimaryReason(locator: PrimaryLocator): string {
  const hosts = locator.target.hosts.map((_, i) => locator.target.label(i)).join(', ');
  return `no writable primary among ${hosts}${locator.lastError ? ` (last: ${locator.lastError})` : ''}`;
}

export async function runWorker(opts: WorkerOptions = {}): Promise<Worker> {
  const worker = new Worker(opts);
  await worker.start();
  return worker;
}
