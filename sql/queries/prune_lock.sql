-- One pruner at a time across all workers: a lock held until the pruning transaction ends.
SELECT pg_try_advisory_xact_lock(hashtextextended('sluice.prune.' || :'schema', 0)) AS got
