-- The queues whose claims must go through claim_controlled_jobs.
SELECT name FROM :"schema".queues WHERE controlled
