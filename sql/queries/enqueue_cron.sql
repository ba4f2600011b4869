-- One tick of a recurring job: its job's id, or NULL when the tick was recorded before.
SELECT :"schema".enqueue_cron(:name, :tick::timestamptz, :task, :payload::jsonb, :queue, :priority, :max_attempts) AS id
