-- Version 7: a worker claims only jobs of tasks it has a handler for, so a job that another
-- worker (a newer release, another service on the same queue) could run is never failed here
-- as "unknown task". The runnable index leads with (queue, task), so the claim reads, per task
-- it handles, only that task's head of the queue: queued jobs of other tasks are never walked.
CREATE INDEX jobs_runnable_task_idx ON :"schema".jobs (queue, task, priority, run_at, id) WHERE status = 'queued';
DROP INDEX :"schema".jobs_runnable_idx;

-- The tasks each worker handles, so `sluice status` can name queued tasks no live worker takes.
ALTER TABLE :"schema".workers ADD COLUMN tasks text[];

-- retry_job is for finished jobs only: a queued job keeps its run_at (run_job_now moves it), a
-- running one must be cancelled or left to finish. Returns 'queued', or NULL when there is no such job.
CREATE OR REPLACE FUNCTION :"schema".retry_job(job_id bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_status text;
  v_queue text;
  v_run_at timestamptz;
BEGIN
  UPDATE :"schema".jobs
  SET status = 'queued', run_at = now(), finished_at = NULL,
      max_attempts = greatest(max_attempts, attempts + 1)
  WHERE id = job_id AND status IN ('failed', 'cancelled', 'completed')
  RETURNING status, queue, run_at INTO v_status, v_queue, v_run_at;
  IF v_status IS NOT NULL THEN
    PERFORM :"schema".notify_queued(ARRAY[v_queue], ARRAY[v_run_at]);
    RETURN v_status;
  END IF;
  SELECT status, run_at INTO v_status, v_run_at FROM :"schema".jobs WHERE id = job_id;
  IF v_status = 'queued' THEN
    RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = format(
      'sluice: job %s is queued (to run at %s): retry is for failed, cancelled or completed jobs; run_job_now(%s) (sluice run-now %s) runs it now',
      job_id, v_run_at, job_id, job_id);
  ELSIF v_status = 'running' THEN
    RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = format(
      'sluice: job %s is running: retry is for failed, cancelled or completed jobs; cancel it first, or let it finish', job_id);
  END IF;
  RETURN v_status;
END
$$;

-- Run a queued job now instead of at its run_at. Returns 'queued', or NULL when there is no such job.
CREATE FUNCTION :"schema".run_job_now(job_id bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_status text;
  v_queue text;
  v_run_at timestamptz;
BEGIN
  UPDATE :"schema".jobs SET run_at = least(run_at, now())
  WHERE id = job_id AND status = 'queued'
  RETURNING status, queue, run_at INTO v_status, v_queue, v_run_at;
  IF v_status IS NOT NULL THEN
    PERFORM :"schema".notify_queued(ARRAY[v_queue], ARRAY[v_run_at]);
    RETURN v_status;
  END IF;
  SELECT status INTO v_status FROM :"schema".jobs WHERE id = job_id;
  IF v_status IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = format(
      'sluice: job %s is %s: run_job_now is for queued jobs%s', job_id, v_status,
      CASE WHEN v_status = 'running' THEN '' ELSE format('; retry_job(%s) (sluice retry %s) runs a finished job again', job_id, job_id) END);
  END IF;
  RETURN v_status;
END
$$;
