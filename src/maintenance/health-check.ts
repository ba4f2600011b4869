// Reads the database's health now and then (src/admin/health.ts) and keeps the last reading for
// /metrics and /readyz, so a scrape or a probe never waits on the database. A warning is logged
// when it appears, when its cause changes (another session holds the horizon now) and when it
// clears: once per state change, not at every check.
import type pg from 'pg';
import { healthWarnings, readHealth, type DatabaseHealth, type HealthSignal, type HealthThresholds, type HealthWarning } from '../admin/health.js';
import { withClient } from '../db/pool.js';
import type { Logger } from '../observe/logger.js';
import { PeriodicService } from './service.js';

export interface HealthCheckOptions {
  pool: pg.Pool;
  schema: string;
  thresholds: HealthThresholds;
  everyMs: number;
  log: Logger;
}

export class HealthCheck extends PeriodicService {
  readonly name = 'health-check';
  protected readonly failureMessage = 'reading the database health failed';
  private last: DatabaseHealth | undefined;
  private lastWarnings: HealthWarning[] = [];
  /** What each warning is about now (for xmin: which transaction holds it); a different value is a new state. */
  private readonly states = new Map<HealthSignal, string>();

  constructor(private readonly opts: HealthCheckOptions) {
    super({ everyMs: opts.everyMs, firstRunMs: 0, log: opts.log });
  }

  /** The last reading; undefined before the first and after a failed one. */
  get latest(): DatabaseHealth | undefined {
    return this.last;
  }

  /** The thresholds the last reading passed. */
  get warnings(): readonly HealthWarning[] {
    return this.last ? this.lastWarnings : [];
  }

  async check(): Promise<DatabaseHealth> {
    let health: DatabaseHealth;
    try {
      health = await withClient(this.opts.pool, (c) => readHealth(c, this.opts.schema, this.opts.thresholds));
    } catch (err) {
      this.last = undefined;
      throw err;
    }
    this.lastWarnings = healthWarnings(health, this.opts.thresholds);
    this.last = health;
    this.logChanges(health);
    return health;
  }

  protected async runOnce(): Promise<void> {
    await this.check();
  }

  private logChanges(health: DatabaseHealth): void {
    const { log } = this.opts;
    const now = new Map(this.lastWarnings.map((w) => [w.signal, w] as const));
    for (const [signal, w] of now) {
      const state = signal === 'xmin' ? `${health.xmin?.pid}:${health.xmin?.since}` : 'on';
      if (this.states.get(signal) === state) continue;
      this.states.set(signal, state);
      const holder = signal === 'xmin' ? { holder: health.xmin } : {};
      log.warn({ signal, ...holder }, w.message);
    }
    for (const signal of [...this.states.keys()]) {
      if (now.has(signal)) continue;
      this.states.delete(signal);
      log.info({ signal }, `database health: ${signal.replace('_', ' ')} back below its threshold`);
    }
  }
}
