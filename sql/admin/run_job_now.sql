-- The status after the call, NULL when there is no such job.
SELECT :"schema".run_job_now(:id) AS status
