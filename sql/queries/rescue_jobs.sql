-- Requeue (or fail, with no attempts left) the running jobs of workers silent for :dead_after_ms, and of
-- holders that are not registered at all, and notify their queues. Row locks make each rescue
-- happen exactly once when several workers rescue at the same moment.
WITH dead AS (
  DELETE FROM :"schema".workers
  WHERE heartbeat_at < now() - :dead_after_ms * interval '1 millisecond'
  RETURNING id
), lost AS (
  SELECT j.id FROM :"schema".jobs j
  WHERE j.status = 'running'
    AND (j.locked_by IN (SELECT id FROM dead)
         OR NOT EXISTS (SELECT 1 FROM :"schema".workers w WHERE w.id = j.locked_by))
  FOR UPDATE OF j SKIP LOCKED
), rescued AS (
  UPDATE :"schema".jobs j
  SET status = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'queued' END,
      finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
      last_error = format('worker lost: %s stopped heartbeating during attempt %s',
                          coalesce(j.locked_by, 'an unknown worker'), j.attempts),
      errors = :"schema".append_error(j.errors, j.attempts,
                 format('worker lost: %s stopped heartbeating', coalesce(j.locked_by, 'an unknown worker')))
  FROM lost
  WHERE j.id = lost.id
  RETURNING j.id, j.status, j.queue, j.task, j.locked_by, j.run_at
), notified AS (
  SELECT :"schema".notify_queued(array_agg(queue), array_agg(run_at)) FROM rescued WHERE status = 'queued'
)
SELECT r.id, r.status, r.queue, r.task, r.locked_by FROM rescued r, notified
