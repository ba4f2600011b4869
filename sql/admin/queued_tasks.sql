-- Queued jobs per queue and task (from the runnable index), so `sluice status` can name the
-- tasks that no live worker of their queue handles.
SELECT queue, task, count(*)::int AS queued
FROM :"schema".jobs
WHERE status = 'queued'
GROUP BY queue, task
ORDER BY queue, task
