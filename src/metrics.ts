// Prometheus metrics, one registry per worker. Counters move on the job path (a few map lookups
// per job); gauges that need the database are read at scrape time.
import client from 'prom-client';

type Labels = { queue: string; task: string };

export interface MetricsSources {
  inFlight(): number;
  pool(): { total: number; idle: number; waiting: number };
  listenerConnected(): boolean;
  /** Queue depth and oldest runnable age, read from the database at scrape time. */
  queueStats(): Promise<{ queue: string; status: string; count: number; oldestRunnableSeconds: number | null }[]>;
}

export class Metrics {
  readonly registry = new client.Registry();
  private readonly started: client.Counter<'queue' | 'task'>;
  private readonly completed: client.Counter<'queue' | 'task'>;
  private readonly failed: client.Counter<'queue' | 'task'>;
  private readonly retried: client.Counter<'queue' | 'task'>;
  private readonly cancelled: client.Counter<'queue' | 'task'>;
  private readonly rescued: client.Counter<'queue' | 'task'>;
  private readonly fenced: client.Counter<'queue' | 'task'>;
  private readonly stuck: client.Gauge<'queue' | 'task'>;
  private readonly duration: client.Histogram<'queue' | 'task'>;
  private readonly lag: client.Histogram<'queue'>;
  private readonly notifications: client.Counter;
  private readonly claims: client.Counter;
  private readonly claimedJobs: client.Counter;
  private readonly reconnects: client.Counter;
  private sources: MetricsSources | undefined;
  private readonly byJobKind = new Map<
    string,
    {
      started: client.Counter.Internal;
      completed: client.Counter.Internal;
      duration: client.Histogram.Internal<'queue' | 'task'>;
      lag: client.Histogram.Internal<'queue'>;
    }
  >();

  constructor() {
    const r = [this.registry];
    const jobCounter = (name: string, help: string) =>
      new client.Counter({ name, help, labelNames: ['queue', 'task'] as const, registers: r });
    this.started = jobCounter('sluice_jobs_started_total', 'Jobs whose handler started.');
    this.completed = jobCounter('sluice_jobs_completed_total', 'Jobs completed.');
    this.failed = jobCounter('sluice_jobs_failed_total', 'Jobs failed for good (no attempts left, permanent error, unknown task).');
    this.retried = jobCounter('sluice_jobs_retried_total', 'Failed attempts that will be retried.');
    this.cancelled = jobCounter('sluice_jobs_cancelled_total', 'Running jobs whose handler was aborted by a cancellation.');
    this.rescued = jobCounter('sluice_jobs_rescued_total', 'Jobs of dead workers put back to queued (or failed) by this worker.');
    this.fenced = jobCounter('sluice_outcomes_fenced_total', 'Outcomes refused because the job was cancelled, rescued or re-claimed meanwhile.');
    this.stuck = new client.Gauge({ name: 'sluice_handlers_stuck', help: 'Aborted handlers that have not settled yet (they keep their slot).', labelNames: ['queue', 'task'] as const, registers: r });
    this.duration = new client.Histogram({
      name: 'sluice_job_duration_seconds',
      help: 'Handler run time until the outcome was written.',
      labelNames: ['queue', 'task'] as const,
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300],
      registers: r,
    });
    this.lag = new client.Histogram({
      name: 'sluice_job_lag_seconds',
      help: 'Time from a job being due (run_at) to its start.',
      labelNames: ['queue'] as const,
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      registers: r,
    });
    this.claims = new client.Counter({ name: 'sluice_claims_total', help: 'Claim statements run (jobs claimed / claims = the average batch).', registers: r });
    this.claimedJobs = new client.Counter({ name: 'sluice_claimed_jobs_total', help: 'Jobs taken by claim statements.', registers: r });
    this.notifications = new client.Counter({ name: 'sluice_notifications_total', help: 'Notifications received by the listener.', registers: r });
    this.reconnects = new client.Counter({ name: 'sluice_listener_reconnects_total', help: 'Times the listener connection was re-established.', registers: r });
    const self = this;
    new client.Gauge({ name: 'sluice_jobs_in_flight', help: 'Jobs this worker is running.', registers: r, collect() { this.set(self.sources?.inFlight() ?? 0); } });
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

  attach(sources: MetricsSources): void {
    this.sources = sources;
  }

  jobStarted(l: Labels, lagMs: number): void {
    const c = this.children(l);
    c.started.inc();
    c.lag.observe(Math.max(0, lagMs) / 1000);
  }
  jobCompleted(l: Labels, seconds: number): void {
    const c = this.children(l);
    c.completed.inc();
    c.duration.observe(seconds);
  }
  jobRetried(l: Labels, seconds: number): void {
    this.retried.inc(l);
    this.children(l).duration.observe(seconds);
  }
  jobFailed(l: Labels, seconds: number): void {
    this.failed.inc(l);
    this.children(l).duration.observe(seconds);
  }

  // The per-job metrics, resolved once per queue and task: label lookups cost more than the
  // increments themselves on a busy worker.
  private children(l: Labels) {
    const key = `${l.queue}\u0000${l.task}`;
    let c = this.byJobKind.get(key);
    if (!c) {
      c = {
        started: this.started.labels(l),
        completed: this.completed.labels(l),
        duration: this.duration.labels(l),
        lag: this.lag.labels({ queue: l.queue }),
      };
      this.byJobKind.set(key, c);
    }
    return c;
  }
  jobCancelled(l: Labels): void {
    this.cancelled.inc(l);
  }
  jobRescued(l: Labels): void {
    this.rescued.inc(l);
  }
  writeFenced(l: Labels): void {
    this.fenced.inc(l);
  }
  handlerStuck(l: Labels, delta: number): void {
    this.stuck.inc(l, delta);
  }
  claimed(jobs: number): void {
    this.claims.inc();
    if (jobs > 0) this.claimedJobs.inc(jobs);
  }
  notification(): void {
    this.notifications.inc();
  }
  listenerReconnected(): void {
    this.reconnects.inc();
  }
}
