-- The server's connection budget. max_connections includes the slots kept for superusers
-- (superuser_reserved_connections) and, from PostgreSQL 16, for roles granted
-- pg_use_reserved_connections (reserved_connections; absent before 16, read as 0). Only client
-- backends count against max_connections (not autovacuum, walsenders or background workers).
-- application_name is visible for every session, whoever owns it. The asking session counts in
-- in_use, and in sluice or others by its name, except a `sluice-cli` session (the command asking,
-- about to go away), which only counts in in_use.
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0) AS reserved,
       count(*)::int AS in_use,
       count(*) FILTER (WHERE a.application_name LIKE 'sluice%'
                          AND NOT (a.pid = pg_backend_pid() AND a.application_name = 'sluice-cli'))::int AS sluice,
       count(*) FILTER (WHERE a.application_name NOT LIKE 'sluice%')::int AS others
FROM pg_stat_activity a
WHERE coalesce(a.backend_type, 'client backend') = 'client backend'
