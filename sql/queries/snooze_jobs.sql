-- A handler's snooze: the job goes back to queued at now() + delay_ms without spending the
-- attempt, and its queue is notified. :snoozes is a JSON array of {id, token, delay_ms}; fenced
-- like complete_jobs.
WITH d AS (
  SELECT * FROM jsonb_to_recordset(:snoozes::jsonb) AS d(id bigint, token bigint, delay_ms bigint)
), snoozed AS (
  UPDATE :"schema".jobs j
  SET status = 'queued', attempts = greatest(j.attempts - 1, 0), run_at = now() + d.delay_ms * interval '1 millisecond'
  FROM d
  -- by id through the primary key, as in complete_jobs
  WHERE j.id = ANY (ARRAY(SELECT id FROM d)) AND j.id = d.id AND j.lock_token = d.token AND (j.status = 'running') IS TRUE
  RETURNING j.id, j.queue, j.run_at
), notified AS (
  SELECT :"schema".notify_queued(array_agg(queue), array_agg(run_at)) FROM snoozed
)
SELECT s.id FROM snoozed s, notified
