-- Put running jobs back to queued without spending their attempt (graceful shutdown).
-- $1 ids, $2 their fencing tokens.
UPDATE :"schema".jobs j
SET status = 'queued', attempts = greatest(j.attempts - 1, 0)
FROM unnest($1::bigint[], $2::bigint[]) AS r(id, token)
WHERE j.id = r.id AND j.lock_token = r.token AND j.status = 'running'
RETURNING j.id
