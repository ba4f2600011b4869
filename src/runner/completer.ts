// Writing outcomes. Outcomes that arrive together are written together: one statement per kind
// per flush, on one short borrow. A flush starts as soon as the previous one ends, so a lone job
// is never held back waiting for a batch, and a busy worker batches by itself.
import type pg from 'pg';
import { withClient } from '../db/pool.js';
import { errorSummary } from '../db/errors.js';
import type { Queries } from '../db/queries.js';
import type { Logger } from '../observe/logger.js';
import type { ClaimedJob } from './claim.js';
import { backoffMs } from '../util/backoff.js';
import { sleep, withTimeout } from '../util/time.js';

const WRITE_RETRY = { baseMs: 200, maxMs: 5000, jitter: 'equal' } as const;

export type Written =
  | { applied: true; status: 'completed' | 'queued' | 'failed' }
  /** The job was cancelled, rescued or re-claimed meanwhile: the write was refused (fencing). */
  | { applied: false; reason: 'fenced' }
  /** The worker stopped before the outcome could be written (drain); the job will be rescued. */
  | { applied: false; reason: 'shutdown' };

const FENCED: Written = { applied: false, reason: 'fenced' };
const SHUTDOWN: Written = { applied: false, reason: 'shutdown' };
const COMPLETED: Written = { applied: true, status: 'completed' };
const REQUEUED: Written = { applied: true, status: 'queued' };

interface Pending {
  job: ClaimedJob;
  /** JSON text of one element of the statement's array parameter. */
  json: string;
  kind: 'complete' | 'fail' | 'snooze';
  resolve: (w: Written) => void;
}

export class Completer {
  private pending: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private failures = 0;
  private inFlight = 0;
  private stopped = false;

  /** The statement that writes completions: keep the row (complete_jobs) or delete it (keepCompletedMs 0). */
  readonly completeStatement: Queries['complete_jobs'];

  constructor(
    private readonly pool: pg.Pool,
    private readonly queries: Queries,
    private readonly log: Logger,
    opts: { deleteCompleted?: boolean } = {},
  ) {
    this.completeStatement = opts.deleteCompleted ? queries.delete_completed_jobs : queries.complete_jobs;
  }

  /** `resultJson` is the result already serialised (undefined: no result). */
  complete(job: ClaimedJob, resultJson: string | undefined): Promise<Written> {
    return this.enqueue(job, 'complete', completion(job, resultJson));
  }

  fail(job: ClaimedJob, error: string, retry: boolean, delayMs: number): Promise<Written> {
    const json = JSON.stringify({ id: job.id, token: job.token, error, retry, delay_ms: Math.round(delayMs) });
    return this.enqueue(job, 'fail', json);
  }

  /** Back to queued in `delayMs`, the attempt not spent. */
  snooze(job: ClaimedJob, delayMs: number): Promise<Written> {
    return this.enqueue(job, 'snooze', `{"id":${job.id},"token":${job.token},"delay_ms":${Math.round(delayMs)}}`);
  }

  /** Outcomes not yet confirmed written: waiting, or in the statement under way. */
  get backlog(): number {
    return this.pending.length + this.inFlight;
  }

  /** Writes what is pending for up to `timeoutMs`; what is still unwritten then is given up (and logged). */
  async drain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((this.pending.length || this.flushing) && Date.now() < deadline) {
      // a flush that keeps failing retries until stopped: never wait for it past the deadline
      await withTimeout(this.flushing ?? sleep(20), Math.min(20, deadline - Date.now()));
    }
    this.stopped = true;
    this.giveUp(this.pending.splice(0));
  }

  private giveUp(items: Pending[]): void {
    if (!items.length) return;
    this.log.warn({ jobs: items.map((p) => p.job.id) }, 'outcomes not written before shutdown; these jobs will be rescued and run again');
    for (const p of items) p.resolve(SHUTDOWN);
  }

  private enqueue(job: ClaimedJob, kind: Pending['kind'], json: string): Promise<Written> {
    return new Promise((resolve) => {
      if (this.stopped) return this.giveUp([{ job, json, kind, resolve }]);
      this.pending.push({ job, json, kind, resolve });
      if (!this.flushing) this.flushing = this.flushLoop();
    });
  }

  private async flushLoop(): Promise<void> {
    // let outcomes of the same tick join the first batch
    await new Promise((r) => setImmediate(r));
    while (this.pending.length && !this.stopped) {
      const batch = this.pending;
      this.pending = [];
      this.inFlight = batch.length;
      try {
        await this.write(batch);
        this.failures = 0;
      } catch (err) {
        if (this.stopped) {
          this.giveUp(batch);
          break;
        }
        this.pending = batch.concat(this.pending);
        this.inFlight = 0;
        this.failures++;
        const delay = backoffMs(this.failures, WRITE_RETRY);
        this.log.warn({ err: errorSummary(err), jobs: batch.length, retryInMs: Math.round(delay) }, 'writing job outcomes failed; retrying');
        await sleep(delay);
      } finally {
        this.inFlight = 0;
      }
    }
    this.flushing = undefined;
  }

  private async write(batch: Pending[]): Promise<void> {
    const completes = batch.filter((p) => p.kind === 'complete');
    const fails = batch.filter((p) => p.kind === 'fail');
    const snoozes = batch.filter((p) => p.kind === 'snooze');
    const array = (items: Pending[]) => `[${items.map((p) => p.json).join(',')}]`;
    const { completed, failed, snoozed } = await withClient(this.pool, async (client) => {
      const completed = completes.length ? await this.completeStatement.run(client, { completions: array(completes) }) : undefined;
      const failed = fails.length ? await this.queries.fail_jobs.run(client, { failures: array(fails) }) : undefined;
      const snoozed = snoozes.length ? await this.queries.snooze_jobs.run(client, { snoozes: array(snoozes) }) : undefined;
      return { completed, failed, snoozed };
    });
    const refused = new Set((completed?.rows ?? []).map((r) => String(r.refused)));
    for (const p of completes) p.resolve(refused.has(p.job.id) ? FENCED : COMPLETED);
    const statusById = new Map((failed?.rows ?? []).map((r) => [String(r.id), r.status]));
    for (const p of fails) {
      const status = statusById.get(p.job.id);
      p.resolve(status ? { applied: true, status } : FENCED);
    }
    const snoozedIds = new Set((snoozed?.rows ?? []).map((r) => String(r.id)));
    for (const p of snoozes) p.resolve(snoozedIds.has(p.job.id) ? REQUEUED : FENCED);
  }
}

/** Completes one job inside the caller's transaction (transactional completion), with the completer's statement. */
export async function completeInTransaction(
  client: pg.PoolClient,
  completer: Completer,
  job: ClaimedJob,
  resultJson: string | undefined,
): Promise<boolean> {
  const res = await completer.completeStatement.run(client, { completions: `[${completion(job, resultJson)}]` });
  return res.rows.length === 0;
}

/** One element of complete_jobs' array parameter. Ids and tokens are decimal strings from pg. */
function completion(job: ClaimedJob, resultJson: string | undefined): string {
  return `{"id":${job.id},"token":${job.token},"result":${resultJson ?? 'null'}}`;
}
