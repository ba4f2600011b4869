-- Jobs worker $1 holds in the database but is not running ($2: the ids it runs), claimed more
-- than $3 ms ago: the claim committed but its answer was lost with the connection. They go back
-- to queued without spending the attempt, since no handler ever saw them, and their queues are
-- notified.
WITH released AS (
  UPDATE :"schema".jobs
  SET status = 'queued', attempts = greatest(attempts - 1, 0)
  WHERE locked_by = $1 AND status = 'running' AND NOT (id = ANY ($2::bigint[]))
    AND locked_at < now() - $3 * interval '1 millisecond'
  RETURNING id, queue, run_at
), notified AS (
  SELECT :"schema".notify_queued(array_agg(queue), array_agg(run_at)) FROM released
)
SELECT r.id FROM released r, notified
