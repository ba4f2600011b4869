-- Record failures: :failures is a JSON array of {id, token, error, retry, delay_ms}. A retryable failure
-- with attempts left goes back to queued after its backoff, and its queue is notified; anything
-- else is failed for good. Fenced like complete_jobs.
WITH d AS (
  SELECT * FROM jsonb_to_recordset(:failures::jsonb) AS d(id bigint, token bigint, error text, retry boolean, delay_ms bigint)
), failed AS (
  UPDATE :"schema".jobs j
  SET status = CASE WHEN d.retry AND j.attempts < j.max_attempts THEN 'queued' ELSE 'failed' END,
      run_at = CASE WHEN d.retry AND j.attempts < j.max_attempts
                    THEN now() + d.delay_ms * interval '1 millisecond' ELSE j.run_at END,
      finished_at = CASE WHEN d.retry AND j.attempts < j.max_attempts THEN NULL ELSE now() END,
      last_error = d.error,
      errors = :"schema".append_error(j.errors, j.attempts, d.error)
  FROM d
  -- by id through the primary key, as in complete_jobs
  WHERE j.id = ANY (ARRAY(SELECT id FROM d)) AND j.id = d.id AND j.lock_token = d.token AND (j.status = 'running') IS TRUE
  RETURNING j.id, j.status, j.queue, j.run_at
), notified AS (
  SELECT :"schema".notify_queued(array_agg(queue), array_agg(run_at)) FROM failed WHERE status = 'queued'
)
SELECT f.id, f.status, f.run_at FROM failed f, notified
