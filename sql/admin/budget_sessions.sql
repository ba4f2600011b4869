-- sluice's sessions by application_name (`sluice <worker id>`, `sluice-listener <worker id>`,
-- untagged `sluice` / `sluice-listener`, `sluice-cli`), without the asking `sluice-cli` session.
SELECT a.application_name, count(*)::int AS sessions
FROM pg_stat_activity a
WHERE a.application_name LIKE 'sluice%'
  AND NOT (a.pid = pg_backend_pid() AND a.application_name = 'sluice-cli')
  AND coalesce(a.backend_type, 'client backend') = 'client backend'
GROUP BY a.application_name
ORDER BY a.application_name
