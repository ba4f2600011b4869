-- Write results: :completions is a JSON array of {id, token, result}. Only a job still running under the
-- same fencing token is completed. Returns the ids that were refused (cancelled, rescued or
-- re-claimed meanwhile): none in the common case, so a batch costs no rows to send and read.
WITH d AS (
  SELECT * FROM jsonb_to_recordset(:completions::jsonb) AS d(id bigint, token bigint, result jsonb)
), completed AS (
  UPDATE :"schema".jobs j
  SET status = 'completed', result = d.result, finished_at = now()
  FROM d
  WHERE j.id = d.id AND j.lock_token = d.token AND j.status = 'running'
  RETURNING j.id
)
SELECT d.id AS refused FROM d WHERE d.id NOT IN (SELECT id FROM completed)
