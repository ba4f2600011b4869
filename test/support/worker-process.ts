// A worker in its own process, for chaos tests that kill, pause or starve it. Its task records
// every start outside any transaction, and its effect inside the transaction that completes the
// job: effects must be exactly one per completed job, whatever happens to the workers.
// Config comes from the environment (DATABASE_URL, SLUICE_*); prints "ready <worker id>" once started.
import { Worker } from '../../src/worker/worker.js';
import type { JobContext } from '../../src/tasks.js';

const worker: Worker = new Worker({
  config: { http: { enabled: false } },
  tasks: {
    record: async (p: { ms?: number }, ctx: JobContext): Promise<{ worker: string }> => {
      await ctx.db.query('INSERT INTO chaos.starts (job_id, worker, attempt) VALUES ($1, $2, $3)', [ctx.job.id, worker.identity.id, ctx.job.attempt]);
      if (p.ms) await new Promise((r) => setTimeout(r, p.ms));
      return ctx.completeInTransaction(async (tx) => {
        await tx.query('INSERT INTO chaos.effects (job_id, worker) VALUES ($1, $2)', [ctx.job.id, worker.identity.id]);
        return { worker: worker.identity.id };
      });
    },
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
