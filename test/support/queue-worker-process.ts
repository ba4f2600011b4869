// A worker in its own process for the queue-control scenarios. `hold` records each run in
// qc.runs (start, then end, on the database clock, outside any transaction) and lasts
// payload.ms; `tick` (the recurring job) does nothing. Config from the environment and
// SLUICE_CONFIG; prints "ready <worker id>" once started.
import { Worker } from '../../src/worker/worker.js';
import type { JobContext } from '../../src/tasks.js';

const worker: Worker = new Worker({
  config: { http: { enabled: false } },
  tasks: {
    hold: async (p: { ms?: number }, ctx: JobContext) => {
      const run = await ctx.db.query<{ id: string }>(
        'INSERT INTO qc.runs (job_id, worker, queue, concurrency_key) SELECT $1, $2, $3, concurrency_key FROM sluice.jobs WHERE id = $1 RETURNING id',
        [ctx.job.id, worker.identity.id, ctx.job.queue],
      );
      if (p.ms) await new Promise((r) => setTimeout(r, p.ms));
      await ctx.db.query('UPDATE qc.runs SET ended_at = clock_timestamp() WHERE id = $1', [run.rows[0]!.id]);
    },
    tick: async () => undefined,
  },
});

let signals = 0;
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    if (++signals > 1) process.exit(130);
    void worker.stop().then(() => process.exit(0));
  });
}

await worker.start();
process.stdout.write(`ready ${worker.identity.id}\n`);
