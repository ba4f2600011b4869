-- Put running jobs back to queued without spending their attempt (graceful shutdown), and notify
-- their queues: the jobs :ids, under their fencing :tokens.
WITH released AS (
  UPDATE :"schema".jobs j
  SET status = 'queued', attempts = greatest(j.attempts - 1, 0)
  FROM unnest(:ids::bigint[], :tokens::bigint[]) AS r(id, token)
  -- by id through the primary key, as in complete_jobs
  WHERE j.id = ANY (:ids::bigint[]) AND j.id = r.id AND j.lock_token = r.token AND (j.status = 'running') IS TRUE
  RETURNING j.id, j.queue, j.run_at
), notified AS (
  SELECT :"schema".notify_queued(array_agg(queue), array_agg(run_at)) FROM released
)
SELECT r.id FROM released r, notified
