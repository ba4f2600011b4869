// The maintenance services every worker runs beside its queues. A new one is a file in this
// folder and a line here.
import type pg from 'pg';
import type { SluiceConfig } from '../config/schema.js';
import type { Queries } from '../db/queries.js';
import type { Events } from '../observe/events.js';
import type { Logger } from '../observe/logger.js';
import { Pruner } from './pruner.js';
import { Rescuer } from './rescuer.js';
import type { Service } from './service.js';
import { Vacuumer } from './vacuumer.js';

export interface MaintenanceDeps {
  pool: pg.Pool;
  queries: Queries;
  config: SluiceConfig;
  events: Events;
  log: Logger;
  /** Since when this worker's heartbeats have succeeded without a break (0 while failing). */
  healthySince(): number;
}

export function maintenanceServices({ pool, queries, config, events, log, healthySince }: MaintenanceDeps): Service[] {
  const { worker } = config;
  return [
    new Rescuer({ pool, queries, rescueAfterMs: worker.rescueAfterMs, healthySince, events, log }),
    new Pruner({ pool, queries, keepCompletedMs: worker.keepCompletedMs, keepFailedMs: worker.keepFailedMs, everyMs: worker.pruneEveryMs, log }),
    new Vacuumer({ pool, queries, deadRows: worker.vacuumDeadRows, checkEveryMs: 5000, timeoutMs: 600_000, pooled: config.database.pooler === 'transaction', log }),
  ];
}
