-- Delete recorded cron ticks older than :keep_ms, except each entry's latest (backfill counts
-- from it). A worker never enqueues a tick that old, and the job of such a tick is pruned
-- already: the retention given is at least the jobs' own.
DELETE FROM :"schema".cron_ticks c
WHERE c.tick < now() - :keep_ms * interval '1 millisecond'
  AND c.tick < (SELECT max(l.tick) FROM :"schema".cron_ticks l WHERE l.name = c.name)
