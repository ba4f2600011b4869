-- Renews the lease of every job worker $1 holds. No row back: the worker was presumed dead
-- and removed, and must register again.
UPDATE :"schema".workers SET heartbeat_at = now() WHERE id = $1
RETURNING id, extract(epoch FROM clock_timestamp()) * 1000 AS db_ms
