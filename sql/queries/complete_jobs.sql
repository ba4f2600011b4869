-- Write results: $1 is a JSON array of {id, token, result}. Only a job still running under the
-- same fencing token is completed; the ids returned are the ones applied.
UPDATE :"schema".jobs j
SET status = 'completed', result = d.result, finished_at = now()
FROM jsonb_to_recordset($1::jsonb) AS d(id bigint, token bigint, result jsonb)
WHERE j.id = d.id AND j.lock_token = d.token AND j.status = 'running'
RETURNING j.id
