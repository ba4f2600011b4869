-- Write results: :completions is a JSON array of {id, token, result}. Only a job still running under the
-- same fencing token is completed. Returns the ids that were refused (cancelled, rescued or
-- re-claimed meanwhile): none in the common case, so a batch costs no rows to send and read.
WITH d AS (
  SELECT * FROM jsonb_to_recordset(:completions::jsonb) AS d(id bigint, token bigint, result jsonb)
), completed AS (
  UPDATE :"schema".jobs j
  SET status = 'completed', result = d.result, finished_at = now()
  FROM d
  -- by id through the primary key, never through jobs_running_idx: that index holds a dead entry
  -- for every job run since the last vacuum (all of them, under a held xmin), and a plan through it
  -- reads them all at every call; it looks cheapest when few jobs run. `IS TRUE` keeps the planner
  -- from matching the index's predicate.
  WHERE j.id = ANY (ARRAY(SELECT id FROM d)) AND j.id = d.id AND j.lock_token = d.token AND (j.status = 'running') IS TRUE
  RETURNING j.id
)
SELECT d.id AS refused FROM d WHERE d.id NOT IN (SELECT id FROM completed)
