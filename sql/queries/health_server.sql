-- The server-wide signals: how full the NOTIFY queue is (0..1; full, every notifying commit
-- fails), and client connections in use against max_connections, all and sluice's (by
-- application_name; the asking session counts as used).
SELECT pg_notification_queue_usage() AS notify_queue_usage,
       current_setting('max_connections')::int AS max_connections,
       count(*)::int AS used,
       count(*) FILTER (WHERE a.application_name LIKE 'sluice%')::int AS by_sluice
FROM pg_stat_activity a
WHERE coalesce(a.backend_type, 'client backend') = 'client backend'
