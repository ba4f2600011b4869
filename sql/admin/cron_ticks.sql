-- The last recorded tick of each named recurring job, with its job's status (NULL once pruned).
SELECT DISTINCT ON (c.name) c.name, c.tick, c.job_id, j.status
FROM :"schema".cron_ticks c
LEFT JOIN :"schema".jobs j ON j.id = c.job_id
WHERE c.name = ANY (:names::text[])
ORDER BY c.name, c.tick DESC
