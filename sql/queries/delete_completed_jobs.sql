-- complete_jobs when worker.keepCompletedMs is 0: a completed job is deleted instead of kept (its
-- result with it). Same :completions and fencing: only a job still running under the same token
-- goes; returns the ids that were refused.
WITH d AS (
  SELECT * FROM jsonb_to_recordset(:completions::jsonb) AS d(id bigint, token bigint)
), deleted AS (
  DELETE FROM :"schema".jobs j
  USING d
  -- by id through the primary key, as in complete_jobs
  WHERE j.id = ANY (ARRAY(SELECT id FROM d)) AND j.id = d.id AND j.lock_token = d.token AND (j.status = 'running') IS TRUE
  RETURNING j.id
)
SELECT d.id AS refused FROM d WHERE d.id NOT IN (SELECT id FROM deleted)
