-- Whether a priority-0 job of :queue, of one of :tasks, became due before the claim window and
-- still waits: a claim with a window does not see it (runner/queue-runner.ts). It reads the head
-- of the runnable index, dead entries and all, but on its own short borrow and without locking,
-- so claims go on meanwhile. One index scan per task.
SELECT EXISTS (
  SELECT 1 FROM unnest(:tasks::text[]) AS t(name)
  CROSS JOIN LATERAL (
    SELECT 1 FROM :"schema".jobs
    WHERE status = 'queued' AND queue = :queue AND task = t.name AND priority = 0
      AND run_at < now() - make_interval(secs => :window_ms::float8 / 1000)
    LIMIT 1
  ) x
) AS waiting
