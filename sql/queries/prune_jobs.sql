-- Delete up to $3 finished jobs: completed ones finished more than $1 ms ago, failed and
-- cancelled ones more than $2 ms ago (a retention of 0 keeps them). The first condition on
-- finished_at alone lets the BRIN index find candidate pages.
WITH doomed AS (
  SELECT id FROM :"schema".jobs
  WHERE finished_at < now() - least(CASE WHEN $1 > 0 THEN $1 END, CASE WHEN $2 > 0 THEN $2 END) * interval '1 millisecond'
    AND ((status = 'completed' AND $1 > 0 AND finished_at < now() - $1 * interval '1 millisecond')
      OR (status IN ('failed', 'cancelled') AND $2 > 0 AND finished_at < now() - $2 * interval '1 millisecond'))
  LIMIT $3
  FOR UPDATE SKIP LOCKED
)
DELETE FROM :"schema".jobs j USING doomed WHERE j.id = doomed.id
