-- Of the jobs this worker runs ($1 ids, $2 tokens), those it no longer holds: cancelled,
-- rescued or re-claimed elsewhere. Their handlers are aborted.
SELECT r.id, j.status
FROM unnest($1::bigint[], $2::bigint[]) AS r(id, token)
LEFT JOIN :"schema".jobs j ON j.id = r.id
WHERE j.id IS NULL OR j.status <> 'running' OR j.lock_token <> r.token
