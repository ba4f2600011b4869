// Prometheus metrics, one registry per worker. Counters follow the worker's events (a few
// additions per job, see tallies.ts); gauges that need the database are read at scrape time.
import client from 'prom-client';
import type { DatabaseHealth, HealthSignal } from '../admin/health.js';
import type { Events, JobRef, SluiceEvent } from './events.js';
import { TallyCounter, TallyHistogram, type CounterSeries, type HistogramSeries } from './tallies.js';

type Labels = { queue: string; task: string };

export interface MetricsSources {
  inFlight(): number;
  /** Jobs claimed ahead of free slots (worker.prefetch), not started. */
  prefetched(): number;
  pool(): { total: number; idle: number; waiting: number };
  listenerConnected(): boolean;
  /** Failed attempts of the listener to connect and LISTEN, since the start. */
  listenerFailedAttempts(): number;
  /** With a multi-host database.url: whether a primary is known, and how often it moved. */
  primary?(): { reachable: boolean; failovers: number } | undefined;
  /** Queue depth and oldest runnable age, read from the database at scrape time. */
  queueStats(): Promise<{ queue: string; status: string; count: number; oldestRunnableSeconds: number | null }[]>;
  /** The health check's last reading (undefined: none yet, or the last one failed) and the signals past their thresholds. */
  health(): { health: DatabaseHealth | undefined; warnings: readonly { signal: HealthSignal }[] };
}

const HEALTH_SIGNALS: readonly HealthSignal[] = ['xmin', 'dead_rows', 'notify_queue'];

interface JobFamilies {
  started: TallyCounter;
  completed: TallyCounter;
  failed: TallyCounter;
  retried: TallyCounter;
  snoozed: TallyCounter;
  cancelled: TallyCounter;
  fenced: TallyCounter;
  stuck: client.Gauge<'queue' | 'task'>;
  duration: TallyHistogram;
  lag: TallyHistogram;
}

/** The series of one queue and task, resolved once: counting a job is then a few additions. */
class JobMetrics {
  private readonly startedSeries: CounterSeries;
  private readonly completedSeries: CounterSeries;
  private readonly failedSeries: CounterSeries;
  private readonly retriedSeries: CounterSeries;
  private readonly snoozedSeries: CounterSeries;
  private readonly cancelledSeries: CounterSeries;
  private readonly fencedSeries: CounterSeries;
  private readonly durationSeries: HistogramSeries;

  constructor(private readonly f: JobFamilies, private readonly labels: Labels, private readonly lagSeries: HistogramSeries) {
    this.startedSeries = f.started.series(labels);
    this.completedSeries = f.completed.series(labels);
    this.failedSeries = f.failed.series(labels);
    this.retriedSeries = f.retried.series(labels);
    this.snoozedSeries = f.snoozed.series(labels);
    this.cancelledSeries = f.cancelled.series(labels);
    this.fencedSeries = f.fenced.series(labels);
    this.durationSeries = f.duration.series(labels);
  }

  started(lagMs: number): void {
    this.startedSeries.inc();
    this.lagSeries.observe(Math.max(0, lagMs) / 1000);
  }
  completed(seconds: number): void {
    this.completedSeries.inc();
    this.durationSeries.observe(seconds);
  }
  retried(seconds: number): void {
    this.retriedSeries.inc();
    this.durationSeries.observe(seconds);
  }
  failed(seconds: number): void {
    this.failedSeries.inc();
    this.durationSeries.observe(seconds);
  }
  snoozed(seconds: number): void {
    this.snoozedSeries.inc();
    this.durationSeries.observe(seconds);
  }
  cancelled(): void {
    this.cancelledSeries.inc();
  }
  fenced(): void {
    this.fencedSeries.inc();
  }
  stuck(delta: number): void {
    this.f.stuck.inc(this.labels, delta);
  }
}

export class Metrics {
  readonly registry = new client.Registry();
  private readonly counters: JobFamilies;
  private readonly rescued: client.Counter<'queue' | 'task'>;
  private readonly notifications: client.Counter;
  private readonly claims: client.Counter;
  private readonly claimedJobs: client.Counter;
  private readonly reconnects: client.Counter;
  private sources: MetricsSources | undefined;
  // label lookups cost more than the increments themselves on a busy worker: resolved once per kind
  private readonly byQueue = new Map<string, { lag: HistogramSeries; byTask: Map<string, JobMetrics> }>();

  constructor() {
    const r = [this.registry];
    this.registerHealth(r);
    const jobCounter = (name: string, help: string) => new TallyCounter(name, help, this.registry);
    this.counters = {
      started: jobCounter('sluice_jobs_started_total', 'Jobs whose handler started.'),
      completed: jobCounter('sluice_jobs_completed_total', 'Jobs completed.'),
      failed: jobCounter('sluice_jobs_failed_total', 'Jobs failed for good (no attempts left, permanent error, unknown task).'),
      retried: jobCounter('sluice_jobs_retried_total', 'Failed attempts that will be retried.'),
      snoozed: jobCounter('sluice_jobs_snoozed_total', 'Runs that returned snooze(ms): back to queued, the attempt not spent.'),
      cancelled: jobCounter('sluice_jobs_cancelled_total', 'Running jobs whose handler was aborted by a cancellation.'),
      fenced: jobCounter('sluice_outcomes_fenced_total', 'Outcomes refused because the job was cancelled, rescued or re-claimed meanwhile.'),
      stuck: new client.Gauge({ name: 'sluice_handlers_stuck', help: 'Aborted handlers that have not settled yet (they keep their slot).', labelNames: ['queue', 'task'] as const, registers: r }),
      duration: new TallyHistogram(
        'sluice_job_duration_seconds',
        'Handler run time until the outcome was written.',
        [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300],
        this.registry,
      ),
      lag: new TallyHistogram('sluice_job_lag_seconds', 'Time from a job being due (run_at) to its start.', [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120], this.registry),
    };
    this.rescued = new client.Counter({
      name: 'sluice_jobs_rescued_total',
      help: 'Jobs of dead workers put back to queued (or failed) by this worker.',
      labelNames: ['queue', 'task'] as const,
      registers: r,
    });
    this.claims = new client.Counter({ name: 'sluice_claims_total', help: 'Claim statements run (jobs claimed / claims = the average batch).', registers: r });
    this.claimedJobs = new client.Counter({ name: 'sluice_claimed_jobs_total', help: 'Jobs taken by claim statements.', registers: r });
    this.notifications = new client.Counter({ name: 'sluice_notifications_total', help: 'Notifications received by the listener.', registers: r });
    this.reconnects = new client.Counter({ name: 'sluice_listener_reconnects_total', help: 'Times the listener connection was re-established.', registers: r });
    const self = this;
    new client.Gauge({ name: 'sluice_jobs_in_flight', help: 'Jobs this worker is running.', registers: r, collect() { this.set(self.sources?.inFlight() ?? 0); } });
    new client.Gauge({
      name: 'sluice_jobs_prefetched',
      help: 'Jobs claimed ahead of free slots (worker.prefetch) and not started yet; they count as running in the database.',
      registers: r,
      collect() {
        this.set(self.sources?.prefetched() ?? 0);
      },
    });
    new client.Gauge({
      name: 'sluice_pool_connections',
      help: 'Pool connections by state (total, idle) and borrowers waiting.',
      labelNames: ['state'] as const,
      registers: r,
      collect() {
        const p = self.sources?.pool() ?? { total: 0, idle: 0, waiting: 0 };
        this.set({ state: 'total' }, p.total);
        this.set({ state: 'idle' }, p.idle);
        this.set({ state: 'waiting' }, p.waiting);
      },
    });
    new client.Counter({
      name: 'sluice_listener_connect_failures_total',
      help: 'Attempts of the listener to connect and LISTEN that failed (unreachable, refused, in recovery).',
      registers: r,
      collect() {
        this.reset();
        this.inc(self.sources?.listenerFailedAttempts() ?? 0);
      },
    });
    new client.Counter({
      name: 'sluice_database_failovers_total',
      help: 'Times the pool found the writable primary on another host of a multi-host database.url than before.',
      registers: r,
      collect() {
        this.reset();
        this.inc(self.sources?.primary?.()?.failovers ?? 0);
      },
    });
    new client.Gauge({
      name: 'sluice_database_primary_reachable',
      help: '1 while the pool knows a writable primary (always 1 with a single-host database.url).',
      registers: r,
      collect() {
        this.set(self.sources?.primary?.()?.reachable === false ? 0 : 1);
      },
    });
    new client.Gauge({ name: 'sluice_listener_connected', help: '1 while the LISTEN connection is up.', registers: r, collect() { this.set(self.sources?.listenerConnected() ? 1 : 0); } });
    const depth = new client.Gauge({ name: 'sluice_queue_jobs', help: 'Jobs per queue and status (finished statuses excluded).', labelNames: ['queue', 'status'] as const, registers: r });
    const oldest = new client.Gauge({ name: 'sluice_queue_oldest_runnable_seconds', help: 'Age of the oldest runnable job past its run_at, per queue.', labelNames: ['queue'] as const, registers: r });
    new client.Gauge({
      name: 'sluice_queue_stats_up',
      help: '1 when the last scrape could read queue statistics from the database.',
      registers: r,
      async collect() {
        depth.reset();
        oldest.reset();
        try {
          for (const s of (await self.sources?.queueStats()) ?? []) {
            depth.set({ queue: s.queue, status: s.status }, s.count);
            if (s.oldestRunnableSeconds !== null) oldest.set({ queue: s.queue }, s.oldestRunnableSeconds);
          }
          this.set(1);
        } catch {
          this.set(0);
        }
      },
    });
  }

  /** Gauges of the database's health, from the health check's last reading (a scrape does not query for them). */
  private registerHealth(r: client.Registry[]): void {
    const self = this;
    const gauge = (name: string, help: string, read: (h: DatabaseHealth) => number | null) =>
      new client.Gauge({
        name,
        help,
        registers: r,
        collect() {
          this.reset();
          const h = self.sources?.health().health;
          const v = h ? read(h) : null;
          if (v !== null) this.set(v);
        },
      });
    const epoch = (iso: string | null) => (iso ? Date.parse(iso) / 1000 : null);
    gauge('sluice_db_xmin_age_seconds', "How long the oldest holder of this database's xmin horizon has held it (0: nobody).", (h) => (h.xmin?.ageMs ?? 0) / 1000);
    new client.Gauge({
      name: 'sluice_db_xmin_holder',
      help: 'The session holding the xmin horizon the longest (value 1; pid, application_name and state as labels). Absent when nobody holds it.',
      labelNames: ['pid', 'application_name', 'state'] as const,
      registers: r,
      collect() {
        this.reset();
        const x = self.sources?.health().health?.xmin;
        if (x) this.set({ pid: x.pid === null ? '' : String(x.pid), application_name: x.applicationName ?? '', state: x.state ?? '' }, 1);
      },
    });
    gauge('sluice_db_jobs_live_rows', 'Live rows of the jobs table (statistics estimate).', (h) => h.jobsTable.liveRows);
    gauge('sluice_db_jobs_dead_rows', 'Dead row versions in the jobs table that vacuum has not removed yet.', (h) => h.jobsTable.deadRows);
    gauge('sluice_db_jobs_table_bytes', 'Size of the jobs table (with TOAST), without its indexes.', (h) => h.jobsTable.tableBytes);
    gauge('sluice_db_jobs_index_bytes', "Size of the jobs table's indexes.", (h) => h.jobsTable.indexBytes);
    gauge('sluice_db_jobs_last_vacuum_timestamp_seconds', 'When the jobs table was last vacuumed by a VACUUM command (0: never).', (h) => epoch(h.jobsTable.lastVacuum));
    gauge('sluice_db_jobs_last_autovacuum_timestamp_seconds', 'When autovacuum last vacuumed the jobs table (0: never).', (h) => epoch(h.jobsTable.lastAutovacuum));
    gauge('sluice_db_notify_queue_usage', 'Fraction of the NOTIFY queue in use (pg_notification_queue_usage()).', (h) => h.notifyQueueUsage);
    gauge('sluice_db_connections_used', 'Client connections open on the server now.', (h) => h.connections.used);
    gauge('sluice_db_connections_max', 'The server\'s max_connections.', (h) => h.connections.max);
    gauge('sluice_db_connections_sluice', 'Client connections whose application_name starts with "sluice".', (h) => h.connections.bySluice);
    new client.Gauge({
      name: 'sluice_db_health_warning',
      help: 'Per signal (xmin, dead_rows, notify_queue): 1 while past its health.* threshold.',
      labelNames: ['signal'] as const,
      registers: r,
      collect() {
        const current = new Set(self.sources?.health().warnings.map((w) => w.signal));
        for (const signal of HEALTH_SIGNALS) this.set({ signal }, current.has(signal) ? 1 : 0);
      },
    });
    new client.Gauge({
      name: 'sluice_db_health_up',
      help: '1 when the last health check could read the database.',
      registers: r,
      collect() {
        this.set(self.sources?.health().health ? 1 : 0);
      },
    });
  }

  attach(sources: MetricsSources): void {
    this.sources = sources;
  }

  /** Counts what the worker's events report. */
  observe(events: Events): () => void {
    return events.on((e) => this.count(e));
  }

  private count(e: SluiceEvent): void {
    switch (e.type) {
      case 'claim':
        this.claims.inc();
        if (e.jobs > 0) this.claimedJobs.inc(e.jobs);
        return;
      case 'job.started':
        return this.forJob(e.job).started(e.lagMs);
      case 'job.completed':
        return this.forJob(e.job).completed(e.seconds);
      case 'job.retried':
        return this.forJob(e.job).retried(e.seconds);
      case 'job.failed':
        return this.forJob(e.job).failed(e.seconds);
      case 'job.snoozed':
        return this.forJob(e.job).snoozed(e.seconds);
      case 'job.aborted':
        if (e.cause === 'cancelled') this.forJob(e.job).cancelled();
        return;
      case 'job.fenced':
        return this.forJob(e.job).fenced();
      case 'job.stuck':
        return this.forJob(e.job).stuck(1);
      case 'job.unstuck':
        return this.forJob(e.job).stuck(-1);
      case 'job.rescued':
        this.rescued.inc({ queue: e.queue, task: e.task });
        return;
      case 'notification':
        this.notifications.inc();
        return;
      case 'listener.reconnected':
        this.reconnects.inc();
        return;
      case 'listener.down':
        return;
    }
  }

  /** The metrics of one kind of job, made once per queue and task. */
  private forJob(job: JobRef): JobMetrics {
    let queue = this.byQueue.get(job.queue);
    if (!queue) {
      queue = { lag: this.counters.lag.series({ queue: job.queue }), byTask: new Map() };
      this.byQueue.set(job.queue, queue);
    }
    let m = queue.byTask.get(job.task);
    if (!m) {
      m = new JobMetrics(this.counters, { queue: job.queue, task: job.task }, queue.lag);
      queue.byTask.set(job.task, m);
    }
    return m;
  }
}
