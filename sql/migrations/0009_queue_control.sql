-- Version 9: queue control that holds across every worker, recurring jobs, snooze.
-- - queues: per-queue limits and pause, in the database so that replicas can never disagree.
--   A queue without a row (or whose row sets nothing) is uncontrolled: its claims take the
--   plain path and pay one primary-key probe here.
-- - A controlled queue is claimed only by claim_controlled_jobs, which locks the queue's row:
--   claims of that queue run one at a time across the cluster, and each counts what is running
--   after the previous one committed. That is what makes the limits exact.
-- - queue_starts: the start times of rate-limited queues' jobs within their window.
-- - concurrency_key: an optional job field; key_concurrency limits running jobs per key.
-- - cron_ticks: each recurring job's tick recorded once, for good (job keys forget finished jobs).

CREATE TABLE :"schema".queues (
  name            text PRIMARY KEY CONSTRAINT queues_name_valid CHECK (btrim(name) <> '' AND length(name) <= 128),
  concurrency     integer CONSTRAINT queues_concurrency_valid CHECK (concurrency >= 1),
  key_concurrency integer CONSTRAINT queues_key_concurrency_valid CHECK (key_concurrency >= 1),
  rate_limit      integer CONSTRAINT queues_rate_limit_valid CHECK (rate_limit >= 1),
  rate_period     interval NOT NULL DEFAULT '1 second' CONSTRAINT queues_rate_period_valid CHECK (rate_period > '0'),
  paused          boolean NOT NULL DEFAULT false,
  controlled      boolean GENERATED ALWAYS AS
                    (paused OR concurrency IS NOT NULL OR key_concurrency IS NOT NULL OR rate_limit IS NOT NULL) STORED,
  updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE :"schema".queue_starts (
  queue      text NOT NULL,
  started_at timestamptz NOT NULL
);
CREATE INDEX queue_starts_idx ON :"schema".queue_starts (queue, started_at);

ALTER TABLE :"schema".jobs ADD COLUMN concurrency_key text
  CONSTRAINT jobs_concurrency_key_valid CHECK (concurrency_key <> '' AND octet_length(concurrency_key) <= 255);
-- running jobs per key, for key_concurrency; jobs without a key add no entry
CREATE INDEX jobs_running_key_idx ON :"schema".jobs (queue, concurrency_key)
  WHERE status = 'running' AND concurrency_key IS NOT NULL;

CREATE TABLE :"schema".cron_ticks (
  name       text NOT NULL,
  tick       timestamptz NOT NULL,
  job_id     bigint,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, tick)
);

-- A change of a queue's settings wakes every worker at once (the poll is the fallback).
CREATE FUNCTION :"schema".notify_queue_settings(queue text) RETURNS void LANGUAGE sql AS $$
  SELECT pg_notify(:'channel', json_build_object('queueSettings', queue)::text);
$$;

CREATE FUNCTION :"schema".check_queue_name(queue text) RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF queue IS NULL OR btrim(queue) = '' OR length(queue) > 128 THEN
    RAISE EXCEPTION 'sluice: queue must be a non-blank name of at most 128 characters' USING ERRCODE = '22023';
  END IF;
END
$$;

CREATE FUNCTION :"schema".set_queue_limits(queue text, concurrency integer DEFAULT NULL, key_concurrency integer DEFAULT NULL,
                                           rate_limit integer DEFAULT NULL, rate_period interval DEFAULT '1 second')
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
  PERFORM :"schema".check_queue_name(queue);
  IF concurrency < 1 THEN
    RAISE EXCEPTION 'sluice: concurrency must be at least 1 (or NULL for no limit), got %; to stop a queue use pause_queue', concurrency
      USING ERRCODE = '22023';
  END IF;
  IF key_concurrency < 1 THEN
    RAISE EXCEPTION 'sluice: key_concurrency must be at least 1 (or NULL for no limit), got %', key_concurrency USING ERRCODE = '22023';
  END IF;
  IF rate_limit < 1 THEN
    RAISE EXCEPTION 'sluice: rate_limit must be at least 1 (or NULL for no limit), got %', rate_limit USING ERRCODE = '22023';
  END IF;
  IF rate_period IS NULL OR rate_period <= '0' OR NOT isfinite(rate_period) THEN
    RAISE EXCEPTION 'sluice: rate_period must be a positive interval, got %', coalesce(rate_period::text, 'NULL') USING ERRCODE = '22023';
  END IF;
  INSERT INTO :"schema".queues AS q (name, concurrency, key_concurrency, rate_limit, rate_period)
  VALUES (queue, concurrency, key_concurrency, rate_limit, rate_period)
  ON CONFLICT (name) DO UPDATE
  SET concurrency = excluded.concurrency, key_concurrency = excluded.key_concurrency,
      rate_limit = excluded.rate_limit, rate_period = excluded.rate_period, updated_at = now();
  PERFORM :"schema".notify_queue_settings(queue);
END
$$;

CREATE FUNCTION :"schema".pause_queue(queue text) RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
  PERFORM :"schema".check_queue_name(queue);
  INSERT INTO :"schema".queues AS q (name, paused) VALUES (queue, true)
  ON CONFLICT (name) DO UPDATE SET paused = true, updated_at = now();
  PERFORM :"schema".notify_queue_settings(queue);
END
$$;

CREATE FUNCTION :"schema".resume_queue(queue text) RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
  PERFORM :"schema".check_queue_name(queue);
  UPDATE :"schema".queues q SET paused = false, updated_at = now() WHERE q.name = queue;
  PERFORM :"schema".notify_queue_settings(queue);
END
$$;

-- Claims for controlled queues: up to limits[i] jobs of queues[i], of the worker's tasks.
-- Each queue's row is locked (in name order, so two claims never deadlock) for the rest of the
-- transaction; every statement below takes a new snapshot after the lock (plpgsql, READ
-- COMMITTED), so it sees the jobs of the claim that held the lock before. Returns the claimed
-- jobs, and for a queue that a limit held back (it may have more jobs) one row with id NULL and
-- retry_ms: when a start may be allowed again (rate limit), or NULL (a running job must finish
-- first, or the queue is paused).
CREATE FUNCTION :"schema".claim_controlled_jobs(queues text[], limits integer[], tasks text[], worker_id text)
RETURNS TABLE (id bigint, queue text, task text, payload jsonb, priority integer, attempts integer, max_attempts integer,
               lock_token bigint, job_key text, run_at_ms double precision, created_at_ms double precision, retry_ms double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  d record;
  s :"schema".queues;
  v_now timestamptz;
  allowed integer;
  held_back boolean;
  n_running integer;
  n_recent integer;
  v_retry double precision;
  -- queued jobs looked at per claim under key_concurrency: jobs of keys at their limit are
  -- passed over, up to this many
  scan_limit constant integer := 1000;
  picked bigint[];
BEGIN
  FOR d IN SELECT x.name, x.lim FROM unnest(queues, limits) AS x(name, lim) ORDER BY x.name LOOP
    SELECT * INTO s FROM :"schema".queues q WHERE q.name = d.name FOR NO KEY UPDATE;
    -- after the lock: later than every start recorded by the claims before this one
    v_now := clock_timestamp();
    allowed := d.lim;
    held_back := false;
    v_retry := NULL;
    IF s.paused THEN
      CONTINUE;
    END IF;
    IF s.concurrency IS NOT NULL THEN
      SELECT count(*) INTO n_running FROM :"schema".jobs j WHERE j.status = 'running' AND j.queue = d.name;
      IF s.concurrency - n_running < allowed THEN
        allowed := greatest(s.concurrency - n_running, 0);
        held_back := true;
      END IF;
    END IF;
    IF s.rate_limit IS NOT NULL THEN
      DELETE FROM :"schema".queue_starts qs WHERE qs.queue = d.name AND qs.started_at <= v_now - s.rate_period;
      SELECT count(*) INTO n_recent FROM :"schema".queue_starts qs WHERE qs.queue = d.name;
      IF s.rate_limit - n_recent < allowed THEN
        allowed := greatest(s.rate_limit - n_recent, 0);
        held_back := true;
        -- the window frees a start when its oldest leaves it
        SELECT greatest(date_part('epoch', min(qs.started_at) + s.rate_period - v_now) * 1000, 1) INTO v_retry
        FROM :"schema".queue_starts qs WHERE qs.queue = d.name;
        v_retry := coalesce(v_retry, 1);
      END IF;
    END IF;

    picked := '{}';
    IF allowed > 0 THEN
      IF s.key_concurrency IS NULL THEN
        SELECT coalesce(array_agg(c.id), '{}') INTO picked FROM (
          SELECT x.id FROM unnest(tasks) AS t(name)
          CROSS JOIN LATERAL (
            SELECT j.id, j.priority, j.run_at FROM :"schema".jobs j
            WHERE j.status = 'queued' AND j.queue = d.name AND j.task = t.name AND j.run_at <= v_now
            ORDER BY j.priority, j.run_at, j.id LIMIT allowed FOR UPDATE SKIP LOCKED
          ) x
          ORDER BY x.priority, x.run_at, x.id LIMIT allowed
        ) c;
      ELSE
        -- in order, skipping jobs whose key would go over key_concurrency (jobs without a key are not limited by it)
        SELECT coalesce(array_agg(r.id ORDER BY r.priority, r.run_at, r.id), '{}') INTO picked FROM (
          SELECT k.id, k.priority, k.run_at FROM (
            SELECT c.id, c.priority, c.run_at, c.concurrency_key,
                   row_number() OVER (PARTITION BY c.concurrency_key ORDER BY c.priority, c.run_at, c.id) AS nth
            FROM (
              SELECT x.* FROM unnest(tasks) AS t(name)
              CROSS JOIN LATERAL (
                SELECT j.id, j.priority, j.run_at, j.concurrency_key FROM :"schema".jobs j
                WHERE j.status = 'queued' AND j.queue = d.name AND j.task = t.name AND j.run_at <= v_now
                ORDER BY j.priority, j.run_at, j.id LIMIT scan_limit
              ) x
              ORDER BY x.priority, x.run_at, x.id LIMIT scan_limit
            ) c
          ) k
          LEFT JOIN LATERAL (
            SELECT count(*) AS n FROM :"schema".jobs j
            WHERE j.status = 'running' AND j.queue = d.name AND j.concurrency_key = k.concurrency_key
          ) running_key ON k.concurrency_key IS NOT NULL
          WHERE k.concurrency_key IS NULL OR coalesce(running_key.n, 0) + k.nth <= s.key_concurrency
          ORDER BY k.priority, k.run_at, k.id LIMIT allowed
        ) r;
        IF cardinality(picked) < allowed AND EXISTS (
          SELECT 1 FROM :"schema".jobs j WHERE j.status = 'queued' AND j.queue = d.name AND j.task = ANY (tasks)
            AND j.run_at <= v_now AND j.concurrency_key IS NOT NULL AND j.id <> ALL (picked)) THEN
          held_back := true;
        END IF;
      END IF;
    END IF;

    RETURN QUERY
      WITH claimed AS (
        UPDATE :"schema".jobs j
        SET status = 'running', attempts = j.attempts + 1, locked_by = worker_id, locked_at = v_now, started_at = v_now,
            lock_token = nextval(':"schema".lock_tokens')
        WHERE j.id = ANY (picked) AND j.status = 'queued'
        RETURNING j.id, j.queue, j.task, j.payload, j.priority, j.attempts, j.max_attempts, j.lock_token, j.job_key,
                  date_part('epoch', j.run_at) * 1000 AS run_at_ms, date_part('epoch', j.created_at) * 1000 AS created_at_ms
      ), recorded AS (
        INSERT INTO :"schema".queue_starts (queue, started_at)
        SELECT d.name, v_now FROM claimed WHERE s.rate_limit IS NOT NULL
      )
      SELECT c.*, NULL::float8 FROM claimed c;
    IF held_back THEN
      RETURN QUERY SELECT NULL::bigint, d.name, NULL, NULL::jsonb, NULL::int, NULL::int, NULL::int, NULL::bigint, NULL,
                          NULL::float8, NULL::float8, v_retry;
    END IF;
  END LOOP;
END
$$;

-- concurrency_key: like job_key, a short non-empty string or NULL
CREATE FUNCTION :"schema".check_concurrency_key(concurrency_key text, batch_index bigint) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  at text := CASE WHEN batch_index IS NULL THEN '' ELSE format(' (job %s of the batch)', batch_index) END;
BEGIN
  IF concurrency_key = '' THEN
    RAISE EXCEPTION 'sluice: concurrency_key must be a non-empty string (or NULL for none)%', at USING ERRCODE = '22023';
  END IF;
  IF octet_length(concurrency_key) > 255 THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('sluice: concurrency_key is %s bytes; at most 255 are accepted%s',
      octet_length(concurrency_key), at);
  END IF;
END
$$;

DROP FUNCTION :"schema".add_job(text, jsonb, text, timestamptz, integer, integer, text);
CREATE FUNCTION :"schema".add_job(task text, payload jsonb DEFAULT '{}', queue text DEFAULT 'default',
                                  run_at timestamptz DEFAULT now(), priority integer DEFAULT 0,
                                  max_attempts integer DEFAULT 25, job_key text DEFAULT NULL,
                                  concurrency_key text DEFAULT NULL)
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
  IF add_job.job_key IS NULL THEN
    INSERT INTO :"schema".jobs (task, payload, queue, run_at, priority, max_attempts, concurrency_key)
    VALUES (add_job.task, v_payload, v_queue, v_run_at, v_priority, v_max_attempts, add_job.concurrency_key)
    RETURNING id INTO v_id;
    RETURN v_id;
  END IF;
  LOOP
    INSERT INTO :"schema".jobs (task, payload, queue, run_at, priority, max_attempts, job_key, concurrency_key)
    VALUES (add_job.task, v_payload, v_queue, v_run_at, v_priority, v_max_attempts, add_job.job_key, add_job.concurrency_key)
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
           e.value->>'concurrency_key' AS concurrency_key
    FROM jsonb_array_elements(jobs) WITH ORDINALITY AS e(value, ord)
  ), checked AS MATERIALIZED (
    SELECT i.*, :"schema".check_job(i.task, i.payload, i.queue, i.priority, i.max_attempts, i.run_at, i.job_key, i.ord) AS ok,
           :"schema".check_concurrency_key(i.concurrency_key, i.ord) AS key_ok,
           first_value(i.id) OVER (PARTITION BY i.job_key ORDER BY i.ord) AS key_first
    FROM input i ORDER BY i.ord
  ), ins AS (
    INSERT INTO :"schema".jobs (id, task, payload, queue, run_at, priority, max_attempts, job_key, concurrency_key)
    SELECT c.id, c.task, c.payload, c.queue, c.run_at, c.priority, c.max_attempts, c.job_key, c.concurrency_key
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
                                 (j->>'max_attempts')::integer, j->>'job_key', j->>'concurrency_key');
    k := array_position(ids, NULL, k + 1);
  END LOOP;
  RETURN coalesce(ids, '{}');
END
$$;

-- One recurring job's tick: recorded once for good, whichever worker comes first, and its job
-- enqueued with job_key cron:NAME:TICK (TICK in UTC ISO 8601). Returns the new job's id, or
-- NULL when the tick was recorded before (by another worker, or before a restart).
CREATE FUNCTION :"schema".enqueue_cron(name text, tick timestamptz, task text, payload jsonb, queue text,
                                       priority integer, max_attempts integer)
RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
  v_id bigint;
BEGIN
  INSERT INTO :"schema".cron_ticks AS c (name, tick) VALUES (name, tick) ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN RETURN NULL; END IF;
  v_id := :"schema".add_job(task, payload, queue, tick, priority, max_attempts,
                            'cron:' || name || ':' || to_char(tick AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'));
  UPDATE :"schema".cron_ticks c SET job_id = v_id WHERE c.name = enqueue_cron.name AND c.tick = enqueue_cron.tick;
  RETURN v_id;
END
$$;
