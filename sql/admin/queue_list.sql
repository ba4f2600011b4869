-- Every queue that has settings or unfinished jobs: its limits, pause, queued and running counts
-- and the age of its oldest runnable job. For `sluice queue list`. Reads only unfinished jobs
-- (the partial indexes on queued and running rows).
WITH queued AS (
  SELECT queue, count(*)::int AS queued,
         count(*) FILTER (WHERE run_at <= now())::int AS runnable,
         extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8 * 1000 AS oldest_runnable_ms
  FROM :"schema".jobs WHERE status = 'queued' GROUP BY queue
), running AS (
  SELECT queue, count(*)::int AS running FROM :"schema".jobs WHERE status = 'running' GROUP BY queue
), names AS (
  SELECT name FROM :"schema".queues UNION SELECT queue FROM queued UNION SELECT queue FROM running
)
SELECT n.name, s.concurrency, s.key_concurrency, s.rate_limit,
       extract(epoch FROM coalesce(s.rate_period, '1 second'))::float8 * 1000 AS rate_period_ms,
       coalesce(s.paused, false) AS paused,
       coalesce(q.queued, 0) AS queued, coalesce(q.runnable, 0) AS runnable, coalesce(r.running, 0) AS running,
       q.oldest_runnable_ms
FROM names n
LEFT JOIN :"schema".queues s ON s.name = n.name
LEFT JOIN queued q ON q.queue = n.name
LEFT JOIN running r ON r.queue = n.name
ORDER BY n.name
