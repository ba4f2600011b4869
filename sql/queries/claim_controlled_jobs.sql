-- Claims for queues with limits or a pause (see claim_controlled_jobs in migration 9). Rows with
-- a NULL id name a queue that a limit held back, with retry_ms.
-- The claimed job's traceparent (migration 10) by its primary key: it never changes, so the row
-- version this statement's snapshot sees has it (a job added after that snapshot and claimed at
-- once runs without its link).
SELECT c.*, (SELECT j.traceparent FROM :"schema".jobs j WHERE j.id = c.id) AS traceparent
FROM :"schema".claim_controlled_jobs(:queues::text[], :limits::int[], :tasks::text[], :worker_id) c
