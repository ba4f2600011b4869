-- Enqueue one job through the SQL function every client uses (NULL arguments take defaults).
SELECT :"schema".add_job(:task, :payload::jsonb, :queue, :run_at, :priority, :max_attempts, :job_key, :concurrency_key, traceparent => :traceparent) AS id
