-- One vacuuming worker at a time. A session lock, since VACUUM cannot run in a transaction.
SELECT pg_try_advisory_lock(hashtextextended('sluice.vacuum.' || :'schema', 0)) AS got
