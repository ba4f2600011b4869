-- What the vacuumer decides from: dead row versions in the jobs table as the statistics
-- collector last counted them; the table's size in pages as VACUUM or ANALYZE last recorded it
-- (pg_class.relpages) and as it is now; and whether this role may vacuum and analyze the table
-- (its owner, a member of the owner role, or a superuser).
SELECT coalesce(s.n_dead_tup, 0)::bigint AS dead,
       greatest(c.relpages, 0) AS recorded_pages,
       (pg_relation_size(c.oid) / current_setting('block_size')::int)::int AS pages,
       pg_has_role(current_user, c.relowner, 'USAGE') AS may_vacuum
FROM pg_class c
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = ':"schema".jobs'::regclass
