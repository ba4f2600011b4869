-- The status after the call, NULL when there is no such job.
SELECT :"schema".cancel_job(:id) AS status
