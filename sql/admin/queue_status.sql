-- Jobs per queue and status, with the age of the oldest runnable job (queued and due) per queue.
-- For `sluice status`. Reads the whole table: an operator's query, not a hot path.
SELECT queue,
       count(*) FILTER (WHERE status = 'queued' AND run_at <= now())::int AS runnable,
       count(*) FILTER (WHERE status = 'queued' AND run_at > now())::int AS scheduled,
       count(*) FILTER (WHERE status = 'running')::int AS running,
       count(*) FILTER (WHERE status = 'completed')::int AS completed,
       count(*) FILTER (WHERE status = 'failed')::int AS failed,
       count(*) FILTER (WHERE status = 'cancelled')::int AS cancelled,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE status = 'queued' AND run_at <= now()))::float8
         AS oldest_runnable_seconds
FROM :"schema".jobs
GROUP BY queue
ORDER BY queue
