-- $1 id. The status after the call, NULL when there is no such job.
SELECT :"schema".cancel_job($1) AS status
