-- Jobs, newest first, optionally filtered. $1 status, $2 queue, $3 task (NULL: any), $4 limit.
SELECT id, queue, task, status, priority, run_at, attempts, max_attempts, job_key, locked_by,
       split_part(last_error, E'\n', 1) AS last_error, created_at, started_at, finished_at
FROM :"schema".jobs
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR queue = $2)
  AND ($3::text IS NULL OR task = $3)
ORDER BY id DESC
LIMIT $4
