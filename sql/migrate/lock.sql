-- Migrations of one schema run one at a time, across processes, until the transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended('sluice.migrate.' || :'schema', 0))
