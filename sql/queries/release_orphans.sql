-- Jobs worker :worker_id holds in the database but is not running (:running_ids), claimed more
-- than :older_than_ms ago: the claim committed but its answer was lost with the connection. They go back
-- to queued without spending the attempt, since no handler ever saw them, and their queues are
-- notified.
WITH released AS (
  UPDATE :"schema".jobs
  SET status = 'queued', attempts = greatest(attempts - 1, 0)
  WHERE locked_by = :worker_id AND status = 'running' AND NOT (id = ANY (:running_ids::bigint[]))
    AND locked_at < now() - :older_than_ms * interval '1 millisecond'
  RETURNING id, queue, run_at
), notified AS (
  SELECT :"schema".notify_queued(array_agg(queue), array_agg(run_at)) FROM released
)
SELECT r.id FROM released r, notified
