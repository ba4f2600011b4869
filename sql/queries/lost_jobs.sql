-- Of the jobs this worker runs (:ids, with their fencing :tokens), those it no longer holds: cancelled,
-- rescued or re-claimed elsewhere. Their handlers are aborted.
SELECT r.id, j.status
FROM unnest(:ids::bigint[], :tokens::bigint[]) AS r(id, token)
LEFT JOIN :"schema".jobs j ON j.id = r.id
WHERE j.id IS NULL OR j.status <> 'running' OR j.lock_token <> r.token
