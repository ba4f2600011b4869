-- The status after the call, NULL when there is no such job.
SELECT :"schema".retry_job(:id) AS status
