-- Version 11: what the dashboard needs.
-- - Failed and cancelled jobs are the ones operators look for among millions of completed ones:
--   a partial index on their ids lets the dashboard page through them newest first without
--   walking the completed jobs. Rows enter it only when a job fails for good or is cancelled, so
--   the claim and completion paths do not pay for it.
-- - delete_job, the one way the dashboard (and the CLI) removes a job.
CREATE INDEX jobs_failed_idx ON :"schema".jobs (id) WHERE status IN ('failed', 'cancelled');

-- Delete a job that is not running (a running one must be cancelled first, or left to finish).
-- Returns the status the job had, or NULL when there is no such job.
CREATE FUNCTION :"schema".delete_job(job_id bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_status text;
BEGIN
  DELETE FROM :"schema".jobs WHERE id = job_id AND status <> 'running' RETURNING status INTO v_status;
  IF v_status IS NOT NULL THEN
    RETURN v_status;
  END IF;
  SELECT status INTO v_status FROM :"schema".jobs WHERE id = job_id;
  IF v_status = 'running' THEN
    RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = format(
      'sluice: job %s is running: cancel it first (cancel_job(%s), sluice cancel %s), or let it finish', job_id, job_id, job_id);
  END IF;
  RETURN v_status;
END
$$;
