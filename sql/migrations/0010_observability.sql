-- Version 10: what observability needs from the schema.
-- - jobs.traceparent: the W3C trace context of whoever added the job, so that its run (in a
--   worker, maybe in another language's producer's trace) links back to it. add_job and add_jobs
--   take it as a parameter (`traceparent => '00-...'`); any producer can pass it.
-- - queue_depth(queue): runnable jobs, for autoscalers (KEDA's postgresql scaler) to poll.
-- - add_job/add_jobs redefined from version 9's, with the traceparent parameter.

ALTER TABLE :"schema".jobs ADD COLUMN traceparent text;
-- NOT VALID: every existing row is NULL, and the check of a big table would hold its lock long
ALTER TABLE :"schema".jobs ADD CONSTRAINT jobs_traceparent_valid
  CHECK (traceparent IS NULL OR traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$') NOT VALID;

-- Runnable jobs (queued and due) of one queue, or of every queue when NULL, leaving out paused
-- queues (no worker takes their jobs, so more workers would not help): a count over the partial
-- index of queued jobs, cheap enough to be polled every few seconds (only the branch asked for
-- runs).
CREATE FUNCTION :"schema".queue_depth(queue text DEFAULT NULL) RETURNS bigint
LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN queue_depth.queue IS NULL
    THEN (SELECT count(*) FROM :"schema".jobs j
          WHERE j.status = 'queued' AND j.run_at <= now()
            AND NOT EXISTS (SELECT 1 FROM :"schema".queues q WHERE q.name = j.queue AND q.paused))
    ELSE (SELECT count(*) FROM :"schema".jobs j
          WHERE j.status = 'queued' AND j.queue = queue_depth.queue AND j.run_at <= now()
            AND NOT EXISTS (SELECT 1 FROM :"schema".queues q WHERE q.name = queue_depth.queue AND q.paused))
  END
$$;

-- A traceparent is W3C trace context version 00 with ids that are not all zero.
CREATE FUNCTION :"schema".check_traceparent(traceparent text, batch_index bigint) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF traceparent IS NOT NULL AND (traceparent !~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
      OR substr(traceparent, 4, 32) = repeat('0', 32) OR substr(traceparent, 37, 16) = repeat('0', 16)) THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format(
      'sluice: traceparent must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, ids not all zero), got %s%s',
      left(traceparent, 100), CASE WHEN batch_index IS NULL THEN '' ELSE format(' (job %s of the batch)', batch_index) END);
  END IF;
END
$$;

-- add_job and add_jobs as version 9 made them (per-login job keys, input limits, bounded
-- batches, concurrency_key), with a traceparent.
DROP FUNCTION :"schema".add_job(text, jsonb, text, timestamptz, integer, integer, text, text);
CREATE FUNCTION :"schema".add_job(task text, payload jsonb DEFAULT '{}', queue text DEFAULT 'default',
                                  run_at timestamptz DEFAULT now(), priority integer DEFAULT 0,
                                  max_attempts integer DEFAULT 25, job_key text DEFAULT NULL,
                                  concurrency_key text DEFAULT NULL, traceparent text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
  v_payload jsonb := coalesce(add_job.payload, '{}');
  v_queue text := coalesce(add_job.queue, 'default');
  v_run_at timestamptz := coalesce(add_job.run_at, now());
  v_priority integer := coalesce(add_job.priority, 0);
  v_max_attempts integer := coalesce(add_job.max_attempts, 25);
  -- session_user is a name (collation C): as a text variable it can use the key index
  v_me text := session_user;
  v_id bigint;
BEGIN
  PERFORM :"schema".check_job(add_job.task, v_payload, v_queue, v_priority, v_max_attempts, v_run_at, add_job.job_key, NULL);
  PERFORM :"schema".check_concurrency_key(add_job.concurrency_key, NULL);
  PERFORM :"schema".check_traceparent(add_job.traceparent, NULL);
  IF add_job.job_key IS NULL THEN
    INSERT INTO :"schema".jobs (task, payload, queue, run_at, priority, max_attempts, concurrency_key, traceparent)
    VALUES (add_job.task, v_payload, v_queue, v_run_at, v_priority, v_max_attempts, add_job.concurrency_key, add_job.traceparent)
    RETURNING id INTO v_id;
    RETURN v_id;
  END IF;
  LOOP
    INSERT INTO :"schema".jobs (task, payload, queue, run_at, priority, max_attempts, job_key, concurrency_key, traceparent)
    VALUES (add_job.task, v_payload, v_queue, v_run_at, v_priority, v_max_attempts, add_job.job_key, add_job.concurrency_key,
            add_job.traceparent)
    ON CONFLICT (created_by, job_key) WHERE job_key IS NOT NULL AND status IN ('queued', 'running') DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NOT NULL THEN RETURN v_id; END IF;
    SELECT id INTO v_id FROM :"schema".jobs
    WHERE created_by = v_me AND job_key = add_job.job_key AND status IN ('queued', 'running');
    -- the holder of the key may have finished in between: then insert again
    IF v_id IS NOT NULL THEN RETURN v_id; END IF;
  END LOOP;
END
$$;

-- enable_nestloop off: PostgreSQL guesses 100 elements for any JSON array, and a nested loop
-- over the inserted rows would make a batch of 10,000 quadratic.
CREATE OR REPLACE FUNCTION :"schema".add_jobs(jobs jsonb) RETURNS bigint[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_nestloop = off AS $$
#variable_conflict use_column
DECLARE
  -- session_user is a name (collation C): as a text variable it can use the key index
  v_me text := session_user;
  bad bigint;
  n bigint;
  ids bigint[];
  k integer;
  j jsonb;
BEGIN
  IF jsonb_typeof(jobs) IS DISTINCT FROM 'array' THEN
    RAISE EXCEPTION 'sluice: add_jobs expects a JSON array of jobs, got %', coalesce(jsonb_typeof(jobs), 'nothing')
      USING ERRCODE = '22023';
  END IF;
  n := jsonb_array_length(jobs);
  IF n > 10000 THEN
    RAISE EXCEPTION 'sluice: add_jobs takes at most 10000 jobs per call, got %: split the batch', n USING ERRCODE = '22023';
  END IF;
  SELECT e.ord INTO bad FROM jsonb_array_elements(jobs) WITH ORDINALITY AS e(value, ord)
  WHERE jsonb_typeof(e.value) <> 'object' ORDER BY e.ord LIMIT 1;
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'sluice: job % of the batch is not a JSON object', bad USING ERRCODE = '22023';
  END IF;

  -- ids are drawn before the insert so each input row knows its own. Of the rows sharing a key,
  -- the first is inserted (unless the key's holder exists already) and the others take its id.
  WITH input AS MATERIALIZED (
    SELECT e.ord, nextval(':"schema".jobs_id_seq') AS id,
           e.value->>'task' AS task,
           coalesce(nullif(e.value->'payload', 'null'), '{}') AS payload,
           coalesce(e.value->>'queue', 'default') AS queue,
           coalesce((e.value->>'run_at')::timestamptz, now()) AS run_at,
           coalesce((e.value->>'priority')::integer, 0) AS priority,
           coalesce((e.value->>'max_attempts')::integer, 25) AS max_attempts,
           e.value->>'job_key' AS job_key,
           e.value->>'concurrency_key' AS concurrency_key,
           e.value->>'traceparent' AS traceparent
    FROM jsonb_array_elements(jobs) WITH ORDINALITY AS e(value, ord)
  ), checked AS MATERIALIZED (
    SELECT i.*, :"schema".check_job(i.task, i.payload, i.queue, i.priority, i.max_attempts, i.run_at, i.job_key, i.ord) AS ok,
           :"schema".check_concurrency_key(i.concurrency_key, i.ord) AS key_ok,
           :"schema".check_traceparent(i.traceparent, i.ord) AS traceparent_ok,
           first_value(i.id) OVER (PARTITION BY i.job_key ORDER BY i.ord) AS key_first
    FROM input i ORDER BY i.ord
  ), ins AS (
    INSERT INTO :"schema".jobs (id, task, payload, queue, run_at, priority, max_attempts, job_key, concurrency_key, traceparent)
    SELECT c.id, c.task, c.payload, c.queue, c.run_at, c.priority, c.max_attempts, c.job_key, c.concurrency_key, c.traceparent
    FROM checked c WHERE c.job_key IS NULL OR c.id = c.key_first ORDER BY c.ord
    ON CONFLICT (created_by, job_key) WHERE job_key IS NOT NULL AND status IN ('queued', 'running') DO NOTHING
    RETURNING id
  )
  -- a row without a key is always inserted under its own id; a keyed one takes the id of its
  -- key's first row when that was inserted, else the id of the key's holder, which existed
  -- before this call (the statement's snapshot sees it; one index look-up per such row)
  SELECT array_agg(CASE WHEN c.job_key IS NULL THEN c.id
                        ELSE coalesce(ins.id, (SELECT h.id FROM :"schema".jobs h
                                               WHERE h.created_by = v_me AND h.job_key = c.job_key
                                                 AND h.status IN ('queued', 'running'))) END ORDER BY c.ord) INTO ids
  FROM checked c
  LEFT JOIN ins ON ins.id = c.key_first AND c.job_key IS NOT NULL;

  -- a holder that finished between the insert and the look-up leaves its key free: enqueue anew
  k := array_position(ids, NULL);
  WHILE k IS NOT NULL LOOP
    j := jobs->(k - 1);
    ids[k] := :"schema".add_job(j->>'task', nullif(j->'payload', 'null'), j->>'queue',
                                 (j->>'run_at')::timestamptz, (j->>'priority')::integer,
                                 (j->>'max_attempts')::integer, j->>'job_key', j->>'concurrency_key', j->>'traceparent');
    k := array_position(ids, NULL, k + 1);
  END LOOP;
  RETURN coalesce(ids, '{}');
END
$$;
