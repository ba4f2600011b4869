-- What each group role may do. Producers may call add_job/add_jobs and read their own jobs
-- through my_jobs, nothing else; workers may claim, run, complete and rescue jobs.
-- Re-applied by every `sluice migrate` once the roles exist, so that a function added by a later
-- migration is never left executable by PUBLIC.

-- Functions are executable by everyone unless revoked: keep cancel_job, retry_job and the
-- internals to the worker role.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA :"schema" FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA :"schema" FROM PUBLIC;

GRANT USAGE ON SCHEMA :"schema" TO :"producer_role", :"worker_role";

GRANT EXECUTE ON FUNCTION :"schema".add_job, :"schema".add_jobs TO :"producer_role";
GRANT SELECT ON :"schema".my_jobs TO :"producer_role";

-- every table of the schema, whichever migration added it (jobs, workers, queues, cron ticks, ...),
-- except the record of migrations
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA :"schema" TO :"worker_role";
REVOKE INSERT, UPDATE, DELETE ON :"schema".migrations FROM :"worker_role";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA :"schema" TO :"worker_role";
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA :"schema" TO :"worker_role";
