-- $1 id, $2 host, $3 pid, $4 queues, $5 concurrency, $6 pool size, $7 version
INSERT INTO :"schema".workers (id, host, pid, queues, concurrency, pool_size, version)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
