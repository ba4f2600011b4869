// Structured logs (pino). JSON by default; pretty when stdout is a terminal and pino-pretty is
// installed. Job lines carry job id, task, queue and attempt; payloads and secrets are never logged.
import pino from 'pino';
import { createRequire } from 'node:module';

export type Logger = pino.Logger;

export interface LogOptions {
  level: string;
  format: 'auto' | 'json' | 'pretty';
}

export function createLogger(opts: LogOptions, destination?: pino.DestinationStream): Logger {
  const base = {
    level: opts.level,
    base: { pid: process.pid },
    redact: { paths: ['password', '*.password', 'url', '*.url', 'payload', '*.payload'], censor: '[redacted]' },
  };
  if (destination) return pino(base, destination);
  const pretty = opts.format === 'pretty' || (opts.format === 'auto' && process.stdout.isTTY);
  if (pretty && hasPinoPretty()) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  // synchronous writes: lines come out in the order they were logged, also right before
  // process.exit (an asynchronous stream flushed at exit can overtake a write still in flight)
  return pino(base, pino.destination({ dest: 1, sync: true }));
}

function hasPinoPretty(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}

/** A logger that drops everything, for library users who pass none. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
