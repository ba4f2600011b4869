-- The latest recorded tick of a recurring job (for backfill after downtime).
SELECT max(tick) AS tick FROM :"schema".cron_ticks WHERE name = :name
