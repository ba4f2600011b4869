-- Version 5: claims and completions no longer pay for a trigger. The UPDATE trigger built two
-- transition tables for every claimed and completed row only to find, almost always, that no
-- job had become runnable. Inserts keep their trigger (any client can enqueue with one INSERT or
-- add_job call); the few statements that put jobs back to queued (retry after failure, rescue,
-- release at shutdown, retry_job) notify for themselves through notify_queued.

-- One notification per queue among the given jobs (parallel arrays of queue and run_at), in the
-- same form as before: {queue, due: some job is runnable now, runAt: the earliest future run_at}.
CREATE FUNCTION :"schema".notify_queued(queues text[], run_ats timestamptz[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT x.queue, bool_or(x.run_at <= now()) AS due, min(x.run_at) FILTER (WHERE x.run_at > now()) AS run_at
           FROM unnest(queues, run_ats) AS x(queue, run_at) WHERE x.queue IS NOT NULL GROUP BY x.queue LOOP
    PERFORM pg_notify(:'channel', json_build_object('queue', r.queue, 'due', r.due, 'runAt', r.run_at)::text);
  END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION :"schema".notify_runnable_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM :"schema".notify_queued(array_agg(n.queue), array_agg(n.run_at)) FROM new_rows n WHERE n.status = 'queued';
  RETURN NULL;
END
$$;

DROP TRIGGER jobs_notify_update ON :"schema".jobs;

CREATE OR REPLACE FUNCTION :"schema".retry_job(job_id bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_status text;
  v_queue text;
  v_run_at timestamptz;
BEGIN
  UPDATE :"schema".jobs
  SET status = 'queued', run_at = now(), finished_at = NULL,
      max_attempts = greatest(max_attempts, attempts + 1)
  WHERE id = job_id AND status <> 'running'
  RETURNING status, queue, run_at INTO v_status, v_queue, v_run_at;
  IF v_status IS NULL THEN
    SELECT status INTO v_status FROM :"schema".jobs WHERE id = job_id;
  ELSE
    PERFORM :"schema".notify_queued(ARRAY[v_queue], ARRAY[v_run_at]);
  END IF;
  RETURN v_status;
END
$$;
