-- Renews the lease of every job worker :worker_id holds. No row back: the worker was presumed dead
-- and removed, and must register again.
UPDATE :"schema".workers SET heartbeat_at = now() WHERE id = :worker_id
RETURNING id, extract(epoch FROM clock_timestamp()) * 1000 AS db_ms
