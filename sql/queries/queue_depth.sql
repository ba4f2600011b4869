-- Unfinished jobs per queue and status, and the age of the oldest runnable job per queue, for the
-- metrics scrape. One branch per status, so each reads its partial index: `status IN (...)`
-- would read every finished row too.
SELECT queue, 'queued' AS status, count(*)::int AS n,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8 AS oldest
FROM :"schema".jobs WHERE status = 'queued' GROUP BY queue
UNION ALL
SELECT queue, 'running', count(*)::int, NULL
FROM :"schema".jobs WHERE status = 'running' GROUP BY queue
