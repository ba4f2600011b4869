-- Record failures: $1 is a JSON array of {id, token, error, retry, delay_ms}. A retryable failure
-- with attempts left goes back to queued after its backoff; anything else is failed for good.
-- Fenced like complete_jobs.
UPDATE :"schema".jobs j
SET status = CASE WHEN d.retry AND j.attempts < j.max_attempts THEN 'queued' ELSE 'failed' END,
    run_at = CASE WHEN d.retry AND j.attempts < j.max_attempts
                  THEN now() + d.delay_ms * interval '1 millisecond' ELSE j.run_at END,
    finished_at = CASE WHEN d.retry AND j.attempts < j.max_attempts THEN NULL ELSE now() END,
    last_error = d.error,
    errors = :"schema".append_error(j.errors, j.attempts, d.error)
FROM jsonb_to_recordset($1::jsonb) AS d(id bigint, token bigint, error text, retry boolean, delay_ms bigint)
WHERE j.id = d.id AND j.lock_token = d.token AND j.status = 'running'
RETURNING j.id, j.status, j.run_at
