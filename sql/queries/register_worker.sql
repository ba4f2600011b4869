-- A worker announces itself; registering again (after being presumed dead) renews it.
INSERT INTO :"schema".workers (id, host, pid, queues, concurrency, pool_size, version, tasks)
VALUES (:id, :host, :pid, :queues, :concurrency, :pool_size, :version, :tasks)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
