-- One job with everything it holds.
SELECT id, queue, task, payload, status, priority, run_at, attempts, max_attempts, job_key,
       last_error, errors, result, locked_by, locked_at, created_at, started_at, finished_at
FROM :"schema".jobs
WHERE id = :id
