-- Dead row versions in the jobs table, as the statistics collector last counted them, and
-- whether this role may vacuum the table (its owner, a member of the owner role, or a superuser).
SELECT coalesce(s.n_dead_tup, 0)::bigint AS dead,
       pg_has_role(current_user, c.relowner, 'USAGE') AS may_vacuum
FROM pg_class c
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = ':"schema".jobs'::regclass
