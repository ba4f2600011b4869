-- claim_jobs for one queue. The limit is written into the text (one prepared statement per
-- limit) rather than sent as a parameter: claim_jobs, with a parameter for LIMIT and an unnest
-- of queues, is re-planned by PostgreSQL at every call, while this one gets a generic plan; an
-- idle worker's claim round trip went from about 0.95 to 0.7 ms.
-- Only jobs of the worker's :tasks: one index scan per task on (queue, task, priority, run_at).
-- Same order, locking, window and guard against controlled queues as claim_jobs (:window_ms
-- for the one queue).
WITH next AS (
  SELECT c.id
  FROM unnest(:tasks::text[]) AS t(name)
  CROSS JOIN LATERAL (
    SELECT id, priority, run_at FROM :"schema".jobs
    WHERE status = 'queued' AND queue = :queue AND task = t.name AND run_at <= now()
      AND (priority, run_at) >= (0, CASE WHEN :window_ms::float8 > 0 THEN now() - make_interval(secs => :window_ms::float8 / 1000) ELSE '-infinity' END)
    ORDER BY priority, run_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
  ) c
  WHERE NOT EXISTS (SELECT 1 FROM :"schema".queues s WHERE s.name = :queue AND s.controlled)
  ORDER BY c.priority, c.run_at, c.id
  LIMIT :limit
)
UPDATE :"schema".jobs j
SET status = 'running', attempts = j.attempts + 1, locked_by = :worker_id, locked_at = now(), started_at = now(),
    lock_token = nextval(':"schema".lock_tokens')
-- by id through the primary key, whatever the planner guesses about the size of the backlog
WHERE j.id = ANY (ARRAY(SELECT id FROM next))
RETURNING j.id, j.queue, j.task, j.payload, j.priority, j.attempts, j.max_attempts, j.lock_token, j.job_key, j.traceparent,
          date_part('epoch', j.run_at) * 1000 AS run_at_ms, date_part('epoch', j.created_at) * 1000 AS created_at_ms,
          date_part('epoch', now() - j.run_at) * 1000 AS due_ms
