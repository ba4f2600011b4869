-- The session or prepared transaction that holds back the xmin horizon of this database the
-- longest: its snapshot (backend_xmin) or its own transaction id (backend_xid) keeps vacuum from
-- removing dead row versions of the jobs table. Since PostgreSQL 14 only sessions of this database
-- hold back its tables, so other databases' sessions are left out. The asking session is left out
-- (its snapshot is this statement's), and so are autovacuum workers and a plain VACUUM (vacuum
-- does not hold back vacuum; VACUUM FULL does). The oldest by transaction id is the one that holds the
-- horizon; its age in time runs from the start of its transaction (or of its statement, for a
-- statement outside a transaction block).
SELECT pid, application_name, state, since,
       greatest(0, extract(epoch FROM now() - since) * 1000)::float8 AS age_ms
FROM (
  SELECT a.pid,
         a.application_name,
         a.state,
         coalesce(a.xact_start, a.query_start) AS since,
         greatest(age(a.backend_xmin), age(a.backend_xid)) AS xid_age
  FROM pg_stat_activity a
  WHERE a.datname = current_database()
    AND a.backend_type = 'client backend'
    AND a.pid <> pg_backend_pid()
    AND NOT (a.state = 'active' AND a.query ~* '^\s*vacuum\y' AND a.query !~* '\yfull\y')
    AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
  UNION ALL
  SELECT NULL, NULL, 'prepared transaction ' || p.gid, p.prepared, age(p.transaction)
  FROM pg_prepared_xacts p
  WHERE p.database = current_database()
) holders
ORDER BY xid_age DESC, since
LIMIT 1
