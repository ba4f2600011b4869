-- Claims for queues with limits or a pause (see claim_controlled_jobs in migration 9). Rows with
-- a NULL id name a queue that a limit held back, with retry_ms.
SELECT * FROM :"schema".claim_controlled_jobs(:queues::text[], :limits::int[], :tasks::text[], :worker_id)
