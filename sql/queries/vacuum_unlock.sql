SELECT pg_advisory_unlock(hashtextextended('sluice.vacuum.' || :'schema', 0))
