-- Version 2: who enqueued each job (so producers can read their own), a payload size limit, and
-- add_job/add_jobs as SECURITY DEFINER so a producer role needs no privilege on the table.

ALTER TABLE :"schema".jobs ADD COLUMN created_by text NOT NULL DEFAULT session_user;
ALTER TABLE :"schema".jobs ADD CONSTRAINT jobs_payload_size
  CHECK (pg_column_size(payload) <= 1048576);

-- A producer's window on the queue: its own jobs only.
CREATE VIEW :"schema".my_jobs WITH (security_barrier) AS
  SELECT id, queue, task, payload, status, priority, run_at, attempts, max_attempts, job_key,
         last_error, result, created_at, started_at, finished_at
  FROM :"schema".jobs
  WHERE created_by = session_user;

CREATE OR REPLACE FUNCTION :"schema".check_job(task text, payload jsonb, queue text, priority integer,
                                                max_attempts integer, batch_index bigint) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  at text := CASE WHEN batch_index IS NULL THEN '' ELSE format(' (job %s of the batch)', batch_index) END;
BEGIN
  IF task IS NULL OR btrim(task) = '' THEN
    RAISE EXCEPTION 'sluice: task must be a non-empty name%', at USING ERRCODE = '22023';
  END IF;
  IF length(task) > 128 THEN
    RAISE EXCEPTION 'sluice: task name is longer than 128 characters%', at USING ERRCODE = '22023';
  END IF;
  IF jsonb_typeof(payload) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('sluice: payload must be a JSON object, got %s%s',
      coalesce(jsonb_typeof(payload), 'nothing'), at);
  END IF;
  IF pg_column_size(payload) > 1048576 THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
      'sluice: payload is %s bytes; at most 1048576 (1 MiB) is accepted: store large data elsewhere and pass a reference%s',
      pg_column_size(payload), at);
  END IF;
  IF queue = '' OR length(queue) > 128 THEN
    RAISE EXCEPTION 'sluice: queue must be a non-empty name of at most 128 characters%', at USING ERRCODE = '22023';
  END IF;
  IF priority < 0 THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('sluice: priority must be 0 or more (lower runs first), got %s%s',
      priority, at);
  END IF;
  IF max_attempts < 1 THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('sluice: max_attempts must be at least 1, got %s%s',
      max_attempts, at);
  END IF;
END
$$;

-- Producers enqueue through these alone; they run with the owner's rights on the table.
ALTER FUNCTION :"schema".add_job(text, jsonb, text, timestamptz, integer, integer, text)
  SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION :"schema".add_jobs(jsonb) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
