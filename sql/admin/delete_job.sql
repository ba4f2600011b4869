-- The status the job had, NULL when there is no such job.
SELECT :"schema".delete_job(:id) AS status
