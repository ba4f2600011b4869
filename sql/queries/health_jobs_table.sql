-- Size and dead row versions of the jobs table as the statistics last counted them, and when it
-- was last vacuumed (by anyone, or by autovacuum).
SELECT coalesce(s.n_live_tup, 0)::float8 AS live_rows,
       coalesce(s.n_dead_tup, 0)::float8 AS dead_rows,
       pg_table_size(c.oid)::float8 AS table_bytes,
       pg_indexes_size(c.oid)::float8 AS index_bytes,
       s.last_vacuum,
       s.last_autovacuum
FROM pg_class c
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = ':"schema".jobs'::regclass
