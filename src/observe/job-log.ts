// Log lines for the worker's events. Job lines carry jobId, task, queue and attempt; payloads are
// never logged. The messages are the ones operators grep for: keep them stable.
import type { Events, JobRef, SluiceEvent } from './events.js';
import type { Logger } from './logger.js';

const FENCED = {
  completed: 'job finished but is no longer held by this worker (cancelled or rescued meanwhile); its result was not written',
  failed: 'job failed but is no longer held by this worker (cancelled or rescued meanwhile); the failure was not written',
  snoozed: 'job snoozed but is no longer held by this worker (cancelled or rescued meanwhile); the snooze was not written',
  'completed-in-transaction': 'job is no longer held by this worker (cancelled or rescued meanwhile); its transaction was rolled back',
} as const;

function fields(job: JobRef): { jobId: string; task: string; queue: string; attempt: number } {
  return { jobId: job.id, task: job.task, queue: job.queue, attempt: job.attempt };
}

function firstLine(text: string): string {
  const i = text.indexOf('\n');
  return i < 0 ? text : text.slice(0, i);
}

export function logEvents(events: Events, log: Logger): () => void {
  const debug = () => log.isLevelEnabled('debug');
  return events.on((e: SluiceEvent) => {
    switch (e.type) {
      case 'job.started':
        if (debug()) log.debug(fields(e.job), 'job started');
        return;
      case 'job.completed':
        if (debug()) log.debug(fields(e.job), e.inTransaction ? 'job completed in its own transaction' : 'job completed');
        return;
      case 'job.retried':
        log.warn({ ...fields(e.job), error: firstLine(e.error), retryInMs: Math.round(e.retryInMs) }, 'job failed; will retry');
        return;
      case 'job.snoozed':
        if (debug()) log.debug({ ...fields(e.job), delayMs: e.delayMs }, 'job snoozed');
        return;
      case 'job.failed':
        log.error({ ...fields(e.job), error: firstLine(e.error), permanent: e.permanent }, 'job failed for good');
        return;
      case 'job.aborted':
        if (e.cause === 'cancelled') log.info(fields(e.job), 'job cancelled; its handler was aborted');
        else if (e.cause === 'lost') {
          log.warn(fields(e.job), 'job is no longer held by this worker (rescued or re-claimed elsewhere); its handler was aborted and its outcome discarded');
        } else if (debug()) log.debug({ ...fields(e.job), reason: e.cause }, 'job abandoned');
        return;
      case 'job.fenced':
        log.warn(fields(e.job), FENCED[e.outcome]);
        return;
      case 'job.stuck':
        log.warn({ ...fields(e.job), reason: e.cause }, `handler ignores its AbortSignal: still running ${e.afterMs} ms after the abort; it keeps its slot`);
        return;
      case 'job.unstuck':
        log.info(fields(e.job), 'stuck handler finally settled; its slot is free');
        return;
      case 'job.rescued':
        log.warn({ jobId: e.id, task: e.task, queue: e.queue, lostWorker: e.lostWorker, status: e.status }, 'rescued a job from a lost worker');
        return;
      default:
        return;
    }
  });
}
