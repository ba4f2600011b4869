-- Registered workers with the age of their last heartbeat; :rescue_after_ms is the silence after
-- which a worker is presumed dead (worker.rescueAfterMs).
SELECT w.id, w.host, w.pid, w.queues, w.tasks, w.concurrency, w.pool_size, w.version, w.started_at, w.heartbeat_at,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age_seconds,
       w.heartbeat_at >= now() - :rescue_after_ms * interval '1 millisecond' AS alive,
       (SELECT count(*)::int FROM :"schema".jobs j WHERE j.status = 'running' AND j.locked_by = w.id) AS running
FROM :"schema".workers w
ORDER BY w.started_at, w.id
