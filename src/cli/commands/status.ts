// The state of the system: `sluice status` (queues, workers, unserved queues, connections) and
// `sluice budget` (the connection budget in detail).
import type { Command } from 'commander';
import { checkBudget, readBudget, type Budget } from '../../admin/budget.js';
import { describeHolder, formatDuration, readHealth, type DatabaseHealth } from '../../admin/health.js';
import { listWorkers, queueStatus, unhandledTasks, unservedQueues, type QueueStatus, type WorkerStatus } from '../../admin/status.js';
import { common, loadCliConfig, withDatabase, type CommonOptions } from '../context.js';
import { fields, formatAge, indent, print, printJson, table } from '../output.js';

export function register(program: Command): void {
  common(program.command('status').description('jobs per queue and state, live workers, connection budget')).action(
    (opts: CommonOptions) => cmdStatus(opts),
  );
  common(
    program.command('budget').description('connections: allowed by the server, budgeted by sluice workers, used by others'),
  ).action((opts: CommonOptions) => cmdBudget(opts));
}

async function cmdStatus(opts: CommonOptions): Promise<void> {
  const config = loadCliConfig(opts);
  const rescueAfterMs = config.worker.rescueAfterMs;
  const { queues, workers, unhandled, budget, health } = await withDatabase(config, async (pool, schema) => {
    const workers = await listWorkers(pool, schema, rescueAfterMs);
    return {
      queues: await queueStatus(pool, schema),
      workers,
      unhandled: await unhandledTasks(pool, schema, workers),
      budget: await readBudget(pool, schema, { rescueAfterMs }),
      health: await readHealth(pool, schema, config.health),
    };
  });
  const unserved = unservedQueues(queues, workers);
  if (opts.json) return printJson({ queues, workers, unserved, unhandled, budget, health });
  printQueues(queues);
  print();
  printWorkers(workers, rescueAfterMs);
  print();
  if (unserved.length) {
    print('Queues no live worker takes (their jobs wait; see worker.queues)');
    for (const name of unserved) {
      const q = queues.find((x) => x.queue === name)!;
      print(`  ${name}: ${q.runnable} runnable, ${q.scheduled} scheduled`);
    }
    print();
  }
  if (unhandled.length) {
    print('Tasks no live worker of their queue has a handler for (their jobs wait)');
    for (const u of unhandled) print(`  ${u.queue}: ${u.task}: ${u.queued} queued`);
    print();
  }
  print('Connections');
  print(
    `  max_connections ${budget.maxConnections}, reserved ${budget.reservedConnections}, in use ${budget.inUse} ` +
      `(sluice ${budget.sluiceConnected}, others ${budget.others}, this command ${budget.asking}), available ${budget.available}`,
  );
  print(`  live workers may hold ${budget.sluiceBudget} of ${budget.usableConnections} usable (poolSize + 1 each)`);
  print();
  printHealth(health);
}

function printHealth(h: DatabaseHealth): void {
  const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  const j = h.jobsTable;
  print('Database health');
  print(`  xmin horizon: ${h.xmin ? `held ${formatDuration(h.xmin.ageMs)} by ${describeHolder(h.xmin)} since ${h.xmin.since ?? '?'}` : 'not held by another session'}`);
  print(
    `  jobs table: ${j.liveRows} live rows, ${j.deadRows} dead, ${mb(j.tableBytes)} + ${mb(j.indexBytes)} indexes; ` +
      `last vacuum ${j.lastVacuum ?? 'never'}, last autovacuum ${j.lastAutovacuum ?? 'never'}`,
  );
  print(`  notification queue: ${(h.notifyQueueUsage * 100).toFixed(1)}% used`);
  print(`  connections: ${h.connections.used} of max_connections ${h.connections.max} (sluice ${h.connections.bySluice})`);
  for (const w of h.warnings) print(`  WARNING: ${w}`);
}

function printQueues(queues: QueueStatus[]): void {
  print('Queues');
  if (!queues.length) return print('  (no jobs yet)');
  print(
    indent(
      table(
        ['QUEUE', 'RUNNABLE', 'SCHEDULED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED', 'OLDEST RUNNABLE'],
        queues.map((q) => [q.queue, q.runnable, q.scheduled, q.running, q.completed, q.failed, q.cancelled, formatAge(q.oldestRunnableSeconds)]),
      ),
    ),
  );
}

function printWorkers(workers: WorkerStatus[], rescueAfterMs: number): void {
  print(`Workers (alive: heartbeat within ${formatAge(rescueAfterMs / 1000)})`);
  if (!workers.length) return print('  (none running)');
  print(
    indent(
      table(
        ['ID', 'HOST', 'PID', 'QUEUES', 'CONCURRENCY', 'POOL', 'RUNNING', 'HEARTBEAT', 'STATE'],
        workers.map((w) => [
          w.id,
          w.host,
          w.pid,
          w.queues.join(','),
          w.concurrency,
          w.poolSize,
          w.running,
          `${formatAge(w.heartbeatAgeSeconds)} ago`,
          w.alive ? 'alive' : 'presumed dead',
        ]),
      ),
    ),
  );
}

async function cmdBudget(opts: CommonOptions): Promise<void> {
  const config = loadCliConfig(opts);
  const rescueAfterMs = config.worker.rescueAfterMs;
  const budget: Budget = await withDatabase(config, (pool, schema) => readBudget(pool, schema, { rescueAfterMs }));
  const check = checkBudget(budget, config.database.poolSize);
  if (opts.json) return printJson({ ...budget, check: { poolSize: config.database.poolSize, ...check } });
  print(
    fields([
      ['max_connections', String(budget.maxConnections)],
      ['reserved', `${budget.reservedConnections} (superuser_reserved_connections + reserved_connections)`],
      ['usable', String(budget.usableConnections)],
      ['in use now', String(budget.inUse)],
      ['  sluice', `${budget.sluiceConnected}${budget.sluiceUnattributed ? ` (${budget.sluiceUnattributed} not attributed to a live worker)` : ''}`],
      ['  others', String(budget.others)],
      ['  this command', String(budget.asking)],
      ['available now', String(budget.available)],
    ]),
  );
  print();
  if (!budget.schemaInstalled) print(`sluice is not installed in schema "${config.database.schema}": no workers to list`);
  else if (!budget.sluice.length) print('no live sluice workers');
  else {
    print(
      table(
        ['WORKER', 'HOST', 'PID', 'POOL', 'BUDGET', 'CONNECTED', 'HEARTBEAT'],
        budget.sluice.map((w) => [w.id, w.host, w.pid, w.poolSize, w.budget, w.connected ?? '?', `${formatAge(w.heartbeatAgeSeconds)} ago`]),
      ),
    );
    print(`live workers' budget: ${budget.sluiceBudget} (poolSize + 1 each)`);
  }
  print();
  print(`one more worker with database.poolSize ${config.database.poolSize}: ${check.message}`);
}
