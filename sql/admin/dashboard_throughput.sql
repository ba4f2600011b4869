-- Jobs finished per queue and minute over the last hour, for the overview's charts and counts.
-- finished_at grows with the table's physical order: the BRIN index finds the recent pages.
SELECT queue,
       (extract(epoch FROM date_trunc('minute', finished_at)) * 1000)::float8 AS minute_ms,
       count(*) FILTER (WHERE status = 'completed')::int AS completed,
       count(*) FILTER (WHERE status = 'failed')::int AS failed,
       count(*) FILTER (WHERE status = 'cancelled')::int AS cancelled
FROM :"schema".jobs
WHERE finished_at >= date_trunc('minute', now()) - interval '59 minutes'
GROUP BY 1, 2
ORDER BY 1, 2
