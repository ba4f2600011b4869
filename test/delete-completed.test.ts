// worker.keepCompletedMs 0: a completed job is deleted by the statement that completes it, in a
// batch or in the handler's own transaction, and fencing holds as when the row is kept.
import { expect } from 'chai';
import pg from 'pg';
import { PermanentError } from '../src/errors.js';
import type { JobContext } from '../src/tasks.js';
import { createTestDatabase, waitFor } from './support/db.js';
import { gate, migrated, startWorker, stopWorkers } from './support/worker.js';

describe('deleting jobs as they complete (worker.keepCompletedMs 0)', function () {
  this.timeout(60_000);
  let url: string;
  let pool: pg.Pool;

  beforeEach(async () => {
    url = await createTestDatabase();
    pool = await migrated(url);
  });
  afterEach(async () => {
    await stopWorkers();
    await pool.end();
  });

  const start = (tasks: Parameters<typeof startWorker>[1]) => startWorker(url, tasks, { worker: { keepCompletedMs: 0, concurrency: 4 } });
  const rows = async () => (await pool.query('SELECT id::text, status FROM sluice.jobs ORDER BY id')).rows as { id: string; status: string }[];

  it('deletes each completed job, keeps failed ones, and reports every completion', async () => {
    const w = await start({ ok: async () => ({ big: 'result' }), bad: async () => { throw new PermanentError('no'); } });
    let completed = 0;
    w.events.on((e) => {
      if (e.type === 'job.completed') completed++;
    });
    const ids = await w.addJobs(Array.from({ length: 20 }, () => ({ task: 'ok' })));
    const bad = await w.addJob({ task: 'bad' });
    await waitFor('the completed jobs gone and the failed one failed', async () => {
      const left = await rows();
      return left.length === 1 && left[0]!.status === 'failed';
    });
    expect((await rows())[0]!.id).to.equal(bad);
    expect(completed).to.equal(ids.length);
  });

  it('deletes the job in the handler transaction that commits its writes, and rolls both back together', async () => {
    await pool.query('CREATE TABLE public.outputs (job_id bigint PRIMARY KEY)');
    const w = await start({
      write: async (p: { fail?: boolean }, { job, completeInTransaction }: JobContext) =>
        completeInTransaction(async (tx) => {
          await tx.query('INSERT INTO public.outputs VALUES ($1)', [job.id]);
          if (p.fail) throw new Error('failed after writing');
        }),
    });
    const ok = await w.addJob({ task: 'write' });
    const bad = await w.addJob({ task: 'write', payload: { fail: true }, maxAttempts: 1 });
    await waitFor('one gone, one failed', async () => JSON.stringify(await rows()) === JSON.stringify([{ id: bad, status: 'failed' }]));
    const outputs = await pool.query('SELECT job_id::text AS id FROM public.outputs');
    expect(outputs.rows.map((r) => r.id)).to.deep.equal([ok]);
  });

  it('refuses to delete a job no longer held under the token it was claimed with', async () => {
    const hold = gate();
    const w = await start({ slow: () => hold.wait });
    let fenced = 0;
    w.events.on((e) => {
      if (e.type === 'job.fenced') fenced++;
    });
    const id = await w.addJob({ task: 'slow' });
    await waitFor('the job to run', async () => (await rows())[0]?.status === 'running');
    // as a rescue and a claim by another worker would leave it
    await pool.query("UPDATE sluice.jobs SET lock_token = nextval('sluice.lock_tokens'), locked_by = 'someone-else' WHERE id = $1", [id]);
    hold.open();
    await waitFor('the outcome refused', () => fenced === 1);
    expect(await rows()).to.deep.equal([{ id, status: 'running' }]);
  });
});
