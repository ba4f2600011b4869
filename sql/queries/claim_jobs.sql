-- Take runnable jobs for several queues in one statement: up to :limits[i] jobs of queue
-- :queues[i], only of the worker's :tasks, for worker :worker_id; highest priority (lowest
-- number) first, then oldest run_at, then id. Each claim gets a new fencing token.
-- One index scan per queue and task (LATERAL) on (queue, task, priority, run_at): `= ANY (...)`
-- would sort every queued row instead, and queued jobs of other tasks are never walked.
-- A queue with limits or a pause is claimed only by claim_controlled_jobs, even when this worker
-- has not heard of its settings yet: such a queue gets nothing here (one primary-key probe).
-- :windows_ms[i] > 0: of priority-0 jobs only those due in the last that many milliseconds.
WITH next AS (
  SELECT c.id
  FROM unnest(:queues::text[], :limits::int[], :windows_ms::float8[]) AS q(name, lim, window_ms)
  CROSS JOIN LATERAL (
    SELECT x.id FROM unnest(:tasks::text[]) AS t(name)
    CROSS JOIN LATERAL (
      SELECT id, priority, run_at FROM :"schema".jobs
      WHERE status = 'queued' AND queue = q.name AND task = t.name AND run_at <= now()
        -- the window (priority is 0 or more): jobs of priority 0, the default, due before it are
        -- left out. The scan then starts at the window's edge instead of at the head of the
        -- index, which a held xmin fills with the dead entries of every job claimed since it
        -- began (claiming 50 jobs behind 120,000 of them: 2,625 buffers and 77 ms without, 55 and
        -- 0.5 ms with a window of 10 s). Jobs of other priorities are all seen.
        AND (priority, run_at) >= (0, CASE WHEN q.window_ms > 0 THEN now() - make_interval(secs => q.window_ms / 1000) ELSE '-infinity' END)
      ORDER BY priority, run_at, id
      LIMIT q.lim
      FOR UPDATE SKIP LOCKED
    ) x
    ORDER BY x.priority, x.run_at, x.id
    LIMIT q.lim
  ) c
  WHERE NOT EXISTS (SELECT 1 FROM :"schema".queues s WHERE s.name = q.name AND s.controlled)
)
UPDATE :"schema".jobs j
SET status = 'running', attempts = j.attempts + 1, locked_by = :worker_id, locked_at = now(), started_at = now(),
    lock_token = nextval(':"schema".lock_tokens')
-- by id through the primary key, whatever the planner guesses about the size of the backlog
WHERE j.id = ANY (ARRAY(SELECT id FROM next))
RETURNING j.id, j.queue, j.task, j.payload, j.priority, j.attempts, j.max_attempts, j.lock_token, j.job_key, j.traceparent,
          -- times as epoch milliseconds: a number is far cheaper for the worker to read than a timestamp
          date_part('epoch', j.run_at) * 1000 AS run_at_ms, date_part('epoch', j.created_at) * 1000 AS created_at_ms,
          -- how long the job had been due, by the server's clock (the runner compares it with its claim window)
          date_part('epoch', now() - j.run_at) * 1000 AS due_ms
