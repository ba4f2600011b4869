-- Version 10: what observability needs from the schema.
-- - jobs.traceparent: the W3C trace context of whoever added the job, so that its run (in a
--   worker, maybe in another language's producer's trace) links back to it. add_job and add_jobs
--   take it as a parameter (`traceparent => '00-...'`); any producer can pass it.
-- - queue_depth(queue): runnable jobs, for autoscalers (KEDA's postgresql scaler) to poll.

ALTER TABLE :"schema".jobs ADD COLUMN traceparent text;
-- NOT VALID: every existing row is NULL, and the check of a big table would hold its lock long
ALTER TABLE :"schema".jobs ADD CONSTRAINT jobs_traceparent_valid
  CHECK (traceparent IS NULL OR traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$') NOT VALID;

-- Runnable jobs (queued and due) of one queue, or of every queue when NULL: a count over the
-- partial index of queued jobs, cheap enough to be polled every few seconds (only the branch
-- asked for runs).
CREATE FUNCTION :"schema".queue_depth(queue text DEFAULT NULL) RETURNS bigint
LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN queue_depth.queue IS NULL
    THEN (SELECT count(*) FROM :"schema".jobs WHERE status = 'queued' AND run_at <= now())
    ELSE (SELECT count(*) FROM :"schema".jobs j WHERE j.status = 'queued' AND j.queue = queue_depth.queue AND j.run_at <= now())
  END
$$;
