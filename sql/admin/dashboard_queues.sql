-- Per queue, for the dashboard's overview (polled every few seconds): queued and running jobs
-- from their partial indexes, never a walk over the finished ones.
SELECT queue,
       count(*) FILTER (WHERE status = 'queued' AND run_at <= now())::int AS runnable,
       count(*) FILTER (WHERE status = 'queued' AND run_at > now())::int AS scheduled,
       count(*) FILTER (WHERE status = 'running')::int AS running,
       (extract(epoch FROM now() - min(run_at) FILTER (WHERE status = 'queued' AND run_at <= now())) * 1000)::float8
         AS oldest_runnable_ms
FROM (
  SELECT queue, status, run_at FROM :"schema".jobs WHERE status = 'queued'
  UNION ALL
  SELECT queue, status, run_at FROM :"schema".jobs WHERE status = 'running'
) unfinished
GROUP BY queue
ORDER BY queue
