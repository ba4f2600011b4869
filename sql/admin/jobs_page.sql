-- A page of the dashboard's job list, newest first, by keyset on id: ids below :before and at or
-- above :floor. The window [:floor, :before) bounds what one page reads however rare the
-- filter's matches are; the caller moves it down until the page is full. Filters (NULL: any):
-- :status, :queue, :task, :job_key (exact), :error (an ILIKE pattern on last_error, its % and _
-- escaped by the caller).
SELECT id, queue, task, status, priority, run_at, attempts, max_attempts, job_key, locked_by,
       split_part(last_error, E'\n', 1) AS last_error, created_at, started_at, finished_at
FROM :"schema".jobs
WHERE id < :before::bigint AND id >= :floor::bigint
  AND (:status::text IS NULL OR status = :status)
  AND (:queue::text IS NULL OR queue = :queue)
  AND (:task::text IS NULL OR task = :task)
  AND (:job_key::text IS NULL OR job_key = :job_key)
  AND (:error::text IS NULL OR last_error ILIKE :error)
ORDER BY id DESC
LIMIT :limit
