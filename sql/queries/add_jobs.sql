-- Enqueue many jobs in one call: :jobs is a JSON array of add_job arguments by name.
SELECT :"schema".add_jobs(:jobs::jsonb) AS ids
