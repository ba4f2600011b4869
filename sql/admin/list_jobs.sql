-- Jobs, newest first, optionally filtered by :status, :queue and :task (NULL: any).
SELECT id, queue, task, status, priority, run_at, attempts, max_attempts, job_key, locked_by,
       split_part(last_error, E'\n', 1) AS last_error, created_at, started_at, finished_at
FROM :"schema".jobs
WHERE (:status::text IS NULL OR status = :status)
  AND (:queue::text IS NULL OR queue = :queue)
  AND (:task::text IS NULL OR task = :task)
ORDER BY id DESC
LIMIT :limit
