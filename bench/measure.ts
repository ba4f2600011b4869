// Sampling and statistics shared by the orchestrator and the child processes.
import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { LoadPhaseResult, Spread } from './protocol.js';
import { MONITOR_APP, PRODUCER_APP } from './systems/types.js';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Milliseconds on a monotonic clock shared by everything in one process. */
export const now = () => performance.now();

// ---------------------------------------------------------------------------------------------
// statistics

export function median(values: number[]): number | null {
  return percentile(values, 50);
}

/** Linear-interpolated percentile (p in 0..100) of the values; null when there are none. */
export function percentile(values: number[], p: number): number | null {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  if (v.length === 1) return v[0]!;
  const rank = (p / 100) * (v.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return v[lo]! + (v[hi]! - v[lo]!) * (rank - lo);
}

export function max(values: number[]): number | null {
  return values.length ? Math.max(...values) : null;
}

/** Count, p50, p99 and max of some durations. */
export function spread(values: number[]): Spread {
  return { n: values.length, p50: percentile(values, 50), p99: percentile(values, 99), max: percentile(values, 100) };
}

// ---------------------------------------------------------------------------------------------
// connections

export interface ConnectionPeak {
  /** Most backends connected to the database at one sample, the benchmark's own left out. */
  peak: number;
  /** application_name -> its count at the sample with the peak total. */
  byApplication: Record<string, number>;
  samples: number;
}

/**
 * Samples pg_stat_activity every `everyMs` from its own connection (to another database, so it
 * never counts itself) and keeps the peak for one database. Only client connections count (not
 * autovacuum workers); those tagged bench-monitor (the child's done-poller) and bench-producer
 * (enqueueing before the worker starts) are left out.
 */
export class ConnectionSampler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private result: ConnectionPeak = { peak: 0, byApplication: {}, samples: 0 };
  private stopped = false;

  constructor(
    private readonly client: pg.Client,
    private readonly database: string,
    private readonly everyMs = 50,
  ) {}

  start(): void {
    this.result = { peak: 0, byApplication: {}, samples: 0 };
    this.stopped = false;
    const tick = async () => {
      if (this.stopped) return;
      await this.sampleOnce().catch(() => undefined);
      if (!this.stopped) this.timer = setTimeout(() => void (this.running = tick()), this.everyMs);
    };
    this.running = tick();
  }

  async sampleOnce(): Promise<void> {
    const r = await this.client.query<{ app: string; n: string }>(
      `SELECT coalesce(nullif(application_name, ''), '(none)') AS app, count(*) AS n
         FROM pg_stat_activity
        WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'
          AND coalesce(application_name, '') NOT IN ($2, $3)
        GROUP BY 1`,
      [this.database, MONITOR_APP, PRODUCER_APP],
    );
    this.result.samples++;
    const byApp: Record<string, number> = {};
    let total = 0;
    for (const row of r.rows) {
      // names carry an instance id (pgboss:<id>, "sluice <worker id>"): group by the name alone
      const app = row.app.replace(/^pgboss:.*/, 'pgboss:*').replace(/\s.*$/, '');
      byApp[app] = (byApp[app] ?? 0) + Number(row.n);
      total += Number(row.n);
    }
    if (total > this.result.peak) this.result = { peak: total, byApplication: byApp, samples: this.result.samples };
  }

  async stop(): Promise<ConnectionPeak> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    await this.sampleOnce().catch(() => undefined);
    return this.result;
  }
}

// ---------------------------------------------------------------------------------------------
// memory and CPU of one process

/** Samples this process's RSS every `everyMs` and keeps the peak. */
export class RssSampler {
  private timer: NodeJS.Timeout | undefined;
  peak = 0;

  start(everyMs = 50): void {
    this.peak = process.memoryUsage.rss();
    this.timer = setInterval(() => {
      this.peak = Math.max(this.peak, process.memoryUsage.rss());
    }, everyMs);
    this.timer.unref();
  }

  stop(): number {
    clearInterval(this.timer);
    this.peak = Math.max(this.peak, process.memoryUsage.rss());
    return this.peak;
  }
}

/** Busy CPU time of the whole machine so far, in ms (Linux /proc/stat); null elsewhere. */
export function machineBusyMs(): number | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal ...
    const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (f[7] ?? 0);
    return (busy * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return null;
  }
}

/** CPU time (user + system) of this process so far, in ms. */
export function processCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

export const MB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// formatting

export function fmt(value: number | null | undefined, digits = 0): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A target of the performance issue, reported (not enforced); `met` is null when it was not measured. */
export interface Target {
  value: number | null;
  met: boolean | null;
}

export function check(value: number | null | undefined, ok: (x: number) => boolean): Target {
  if (value === null || value === undefined || Number.isNaN(value)) return { value: null, met: null };
  return { value, met: ok(value) };
}

/**
 * The phases in which the producers could not keep to their schedule (fewer than 95 % of the
 * offered jobs committed): there the load was as fast as the commits allowed, not the offered one.
 */
export function behindSchedule(phases: LoadPhaseResult[]): string | undefined {
  const behind = phases.filter((p) => p.committedPerSec < 0.95 * p.offeredPerSec);
  if (!behind.length) return undefined;
  return (
    'the producers fell behind their schedule in ' +
    behind.map((p) => `${p.name} (${fmt(p.committedPerSec)} of ${fmt(p.offeredPerSec)} jobs/s committed, sends up to ${fmt(p.sendLagMs.max)} ms late)`).join(', ')
  );
}

export function renderTargets(targets: Record<string, Target>): string {
  return Object.entries(targets)
    .map(([what, t]) => `${what}: ${t.met === null ? 'not measured' : `${t.met ? 'met' : 'NOT met'} (${fmt(t.value, 2)})`}`)
    .join('; ');
}

/** Renders rows as a Markdown table: the first `textColumns` columns left-aligned, the numbers after them right-aligned. */
export function markdownTable(header: string[], rows: string[][], textColumns = 1): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    `| ${cells.map((c, i) => (i < textColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (i < textColumns ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(header), sep, ...rows.map(line)].join('\n');
}
