-- Least-privilege group roles for a sluice schema. Apply with `sluice roles` (or psql after
-- replacing the placeholders), then grant them to login roles:
--   GRANT sluice_producer TO billing_app;   GRANT sluice_worker TO sluice_daemon;
-- Producers may call add_job/add_jobs and read their own jobs through my_jobs, nothing else.
-- Workers may claim, run, complete and rescue jobs.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'producer_role') THEN
    CREATE ROLE :"producer_role" NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'worker_role') THEN
    CREATE ROLE :"worker_role" NOLOGIN;
  END IF;
END
$$;

-- Functions are executable by everyone unless revoked: keep cancel_job, retry_job and the
-- internals to the worker role.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA :"schema" FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA :"schema" FROM PUBLIC;

GRANT USAGE ON SCHEMA :"schema" TO :"producer_role", :"worker_role";

GRANT EXECUTE ON FUNCTION :"schema".add_job(text, jsonb, text, timestamptz, integer, integer, text),
                          :"schema".add_jobs(jsonb)
  TO :"producer_role";
GRANT SELECT ON :"schema".my_jobs TO :"producer_role";

GRANT SELECT, INSERT, UPDATE, DELETE ON :"schema".jobs, :"schema".workers TO :"worker_role";
GRANT SELECT ON :"schema".migrations, :"schema".my_jobs TO :"worker_role";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA :"schema" TO :"worker_role";
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA :"schema" TO :"worker_role";
