// Shared pieces of fault tests: a gate to skip them, a non-superuser role (superusers may use the
// reserved slots, so a realistic connection limit needs an ordinary role), a sampler of sluice's
// connections, and a log sink to search.
import { Writable } from 'node:stream';
import pg from 'pg';
import { createLogger, type Logger } from '../../src/observe/logger.js';

/** Fault tests run on their own throwaway clusters; SLUICE_TEST_FAULTS=0 skips them. */
export function faultsEnabled(): boolean {
  return process.env.SLUICE_TEST_FAULTS !== '0';
}

export async function createAppRole(adminUrl: string, name = 'app'): Promise<string> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query(`CREATE ROLE ${name} LOGIN`);
    await c.query(`GRANT ALL ON DATABASE postgres TO ${name}`);
    await c.query(`GRANT ALL ON SCHEMA public TO ${name}`);
  } finally {
    await c.end();
  }
  const u = new URL(adminUrl);
  u.username = name;
  return u.toString();
}

/** Samples connections whose application_name starts with `sluice`, keeping the peak. */
export class ConnectionSampler {
  peak = 0;
  samples = 0;
  private timer: NodeJS.Timeout | undefined;
  private client: pg.Client;
  private busy = false;

  constructor(adminUrl: string, private readonly everyMs = 20, private readonly prefix = 'sluice') {
    this.client = new pg.Client({ connectionString: adminUrl, application_name: 'sampler' });
    this.client.on('error', () => undefined);
  }

  async start(): Promise<void> {
    await this.client.connect();
    this.timer = setInterval(() => void this.sample(), this.everyMs);
  }

  async sample(): Promise<number> {
    if (this.busy) return this.peak;
    this.busy = true;
    try {
      const r = await this.client.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE $1 || '%'",
        [this.prefix],
      );
      this.samples++;
      this.peak = Math.max(this.peak, r.rows[0].n);
      return r.rows[0].n;
    } catch {
      return this.peak;
    } finally {
      this.busy = false;
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.client.end().catch(() => undefined);
  }
}

/** A logger whose lines are kept for assertions (and printed with SLUICE_TEST_LOG). */
export function capturingLogger(level = 'info'): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      const text = chunk.toString();
      lines.push(text);
      if (process.env.SLUICE_TEST_LOG) process.stderr.write(text);
      cb();
    },
  });
  return { log: createLogger({ level, format: 'json' }, sink), lines };
}
