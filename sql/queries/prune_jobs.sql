-- Delete up to :batch_size finished jobs: completed ones finished more than :keep_completed_ms
-- ago (-1 keeps them; 0, where workers delete at completion, takes what was completed before),
-- failed and cancelled ones more than :keep_failed_ms ago (0 keeps them). The first condition on
-- finished_at alone lets the BRIN index find candidate pages.
WITH doomed AS (
  SELECT id FROM :"schema".jobs
  WHERE finished_at < now() - least(CASE WHEN :keep_completed_ms >= 0 THEN :keep_completed_ms END, CASE WHEN :keep_failed_ms > 0 THEN :keep_failed_ms END) * interval '1 millisecond'
    AND ((status = 'completed' AND :keep_completed_ms >= 0 AND finished_at < now() - :keep_completed_ms * interval '1 millisecond')
      OR (status IN ('failed', 'cancelled') AND :keep_failed_ms > 0 AND finished_at < now() - :keep_failed_ms * interval '1 millisecond'))
  LIMIT :batch_size
  FOR UPDATE SKIP LOCKED
)
DELETE FROM :"schema".jobs j USING doomed WHERE j.id = doomed.id
