// The `cron` section: recurring jobs. Each entry is checked here, so a bad schedule, time zone
// or task name is a config error that names the entry, before any worker starts.
import { Cron } from 'croner';

export interface CronEntry {
  name: string;
  /** 5 fields, or 6 with seconds first (croner's syntax). */
  schedule: string;
  /** IANA time zone; default UTC. */
  timezone?: string;
  task: string;
  payload?: Record<string, unknown>;
  queue?: string;
  priority?: number;
  maxAttempts?: number;
  /** Missed ticks to enqueue after downtime; default 0. */
  backfill?: number;
}

const KEYS = new Set(['name', 'schedule', 'timezone', 'task', 'payload', 'queue', 'priority', 'maxAttempts', 'backfill']);
// the name goes into job keys cron:NAME:TICK
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

function isInt(v: unknown, min: number): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= min;
}

export function checkCron(value: unknown): void {
  if (!Array.isArray(value)) throw new Error('must be a list of recurring jobs ({ name, schedule, task, ... })');
  const names = new Set<string>();
  value.forEach((entry: unknown, i) => {
    const where = (name?: unknown) => `entry ${i + 1}${typeof name === 'string' && name ? ` (${name})` : ''}`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw new Error(`${where()} must be a mapping with name, schedule and task`);
    const e = entry as Record<string, unknown>;
    const at = where(e.name);
    for (const key of Object.keys(e)) {
      if (!KEYS.has(key)) throw new Error(`${at}: unknown key ${JSON.stringify(key)} (known: ${[...KEYS].join(', ')})`);
    }
    if (typeof e.name !== 'string' || !NAME.test(e.name)) {
      throw new Error(`${at}: name must be 1 to 100 letters, digits, '_', '.' or '-', starting with a letter or digit; got ${JSON.stringify(e.name)}`);
    }
    if (names.has(e.name)) throw new Error(`${at}: the name is used by another entry`);
    names.add(e.name);
    if (typeof e.task !== 'string' || e.task.trim() === '' || e.task.length > 128) {
      throw new Error(`${at}: task must be a non-empty name of at most 128 characters; got ${JSON.stringify(e.task)}`);
    }
    if (e.timezone !== undefined) {
      try {
        if (typeof e.timezone !== 'string') throw new Error();
        new Intl.DateTimeFormat('en', { timeZone: e.timezone });
      } catch {
        throw new Error(`${at}: timezone ${JSON.stringify(e.timezone)} is not an IANA time zone name (e.g. Europe/Berlin, UTC)`);
      }
    }
    if (typeof e.schedule !== 'string') throw new Error(`${at}: schedule must be a cron expression such as "0 3 * * *"`);
    const fields = e.schedule.trim().split(/\s+/).length;
    if (fields !== 5 && fields !== 6) {
      throw new Error(`${at}: schedule ${JSON.stringify(e.schedule)} has ${fields} fields; give 5 (minute hour day month weekday) or 6 (seconds first)`);
    }
    try {
      new Cron(e.schedule, { timezone: (e.timezone as string | undefined) ?? 'UTC', paused: true }).nextRun();
    } catch (err) {
      throw new Error(`${at}: schedule ${JSON.stringify(e.schedule)} is not valid: ${(err as Error).message}`);
    }
    if (e.payload !== undefined && (e.payload === null || typeof e.payload !== 'object' || Array.isArray(e.payload))) {
      throw new Error(`${at}: payload must be a mapping (a JSON object)`);
    }
    if (e.queue !== undefined && (typeof e.queue !== 'string' || e.queue.trim() === '' || e.queue.length > 128)) {
      throw new Error(`${at}: queue must be a non-blank name of at most 128 characters`);
    }
    if (e.priority !== undefined && !isInt(e.priority, 0)) throw new Error(`${at}: priority must be an integer >= 0`);
    if (e.maxAttempts !== undefined && !isInt(e.maxAttempts, 1)) throw new Error(`${at}: maxAttempts must be an integer >= 1`);
    if (e.backfill !== undefined && !isInt(e.backfill, 0)) throw new Error(`${at}: backfill must be an integer >= 0`);
  });
}
