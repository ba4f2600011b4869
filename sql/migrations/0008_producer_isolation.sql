-- Version 8: what one producer can do to another, and limits on input.
-- - job_key is unique per creating role (created_by, the session's login), not across all
--   producers: one cannot block another's keys, nor learn which exist. Within one role, dedup
--   is as before.
-- - job_key, queue and run_at are checked: a key of 1 to 1024 bytes (the index cannot hold much
--   more); a queue name that is not blank; a finite run_at (-infinity would sort ahead of every
--   other producer's jobs for good).
-- - add_jobs takes at most 10,000 jobs per call, and resolves duplicate keys in one pass: it
--   was quadratic in the number of duplicates.

DROP INDEX :"schema".jobs_job_key_unfinished_idx;
CREATE UNIQUE INDEX jobs_job_key_unfinished_idx ON :"schema".jobs (created_by, job_key)
  WHERE job_key IS NOT NULL AND status IN ('queued', 'running');

-- the same rules for rows inserted without add_job (NOT VALID: rows already there are left be)
ALTER TABLE :"schema".jobs ADD CONSTRAINT jobs_job_key_valid
  CHECK (job_key IS NULL OR (job_key <> '' AND octet_length(job_key) <= 1024)) NOT VALID;
ALTER TABLE :"schema".jobs ADD CONSTRAINT jobs_queue_not_blank CHECK (btrim(queue) <> '') NOT VALID;
ALTER TABLE :"schema".jobs ADD CONSTRAINT jobs_run_at_finite CHECK (isfinite(run_at)) NOT VALID;

DROP FUNCTION :"schema".check_job(text, jsonb, text, integer, integer, bigint);
CREATE FUNCTION :"schema".check_job(task text, payload jsonb, queue text, priority integer,
                                     max_attempts integer, run_at timestamptz, job_key text,
                                     batch_index bigint) RETURNS void
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
  IF btrim(queue) = '' OR length(queue) > 128 THEN
    RAISE EXCEPTION 'sluice: queue must be a non-blank name of at most 128 characters%', at USING ERRCODE = '22023';
  END IF;
  IF priority < 0 THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('sluice: priority must be 0 or more (lower runs first), got %s%s',
      priority, at);
  END IF;
  IF max_attempts < 1 THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('sluice: max_attempts must be at least 1, got %s%s',
      max_attempts, at);
  END IF;
  IF NOT isfinite(run_at) THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('sluice: run_at must be a finite time, got %s%s', run_at, at);
  END IF;
  IF job_key = '' THEN
    RAISE EXCEPTION 'sluice: job_key must be a non-empty string (or NULL for none)%', at USING ERRCODE = '22023';
  END IF;
  IF octet_length(job_key) > 1024 THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('sluice: job_key is %s bytes; at most 1024 are accepted%s',
      octet_length(job_key), at);
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION :"schema".add_job(task text, payload jsonb DEFAULT '{}', queue text DEFAULT 'default',
                                              run_at timestamptz DEFAULT now(), priority integer DEFAULT 0,
                                              max_attempts integer DEFAULT 25, job_key text DEFAULT NULL)
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
  IF add_job.job_key IS NULL THEN
    INSERT INTO :"schema".jobs (task, payload, queue, run_at, priority, max_attempts)
    VALUES (add_job.task, v_payload, v_queue, v_run_at, v_priority, v_max_attempts)
    RETURNING id INTO v_id;
    RETURN v_id;
  END IF;
  LOOP
    INSERT INTO :"schema".jobs (task, payload, queue, run_at, priority, max_attempts, job_key)
    VALUES (add_job.task, v_payload, v_queue, v_run_at, v_priority, v_max_attempts, add_job.job_key)
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
           e.value->>'job_key' AS job_key
    FROM jsonb_array_elements(jobs) WITH ORDINALITY AS e(value, ord)
  ), checked AS MATERIALIZED (
    SELECT i.*, :"schema".check_job(i.task, i.payload, i.queue, i.priority, i.max_attempts, i.run_at, i.job_key, i.ord) AS ok,
           first_value(i.id) OVER (PARTITION BY i.job_key ORDER BY i.ord) AS key_first
    FROM input i ORDER BY i.ord
  ), ins AS (
    INSERT INTO :"schema".jobs (id, task, payload, queue, run_at, priority, max_attempts, job_key)
    SELECT c.id, c.task, c.payload, c.queue, c.run_at, c.priority, c.max_attempts, c.job_key
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
                                 (j->>'max_attempts')::integer, j->>'job_key');
    k := array_position(ids, NULL, k + 1);
  END LOOP;
  RETURN coalesce(ids, '{}');
END
$$;
