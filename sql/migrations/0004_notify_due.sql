-- Version 4: the notification says whether the statement made jobs runnable now ("due"), and
-- the earliest run_at still in the future ("runAt"), judged by the database clock at the
-- statement. A worker wakes at once for the first and keeps a timer for the second; it no
-- longer has to judge "due" by its own estimate of the database clock.
CREATE OR REPLACE FUNCTION :"schema".notify_runnable_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  IF TG_OP = 'INSERT' THEN
    FOR r IN SELECT n.queue, bool_or(n.run_at <= now()) AS due, min(n.run_at) FILTER (WHERE n.run_at > now()) AS run_at
             FROM new_rows n WHERE n.status = 'queued' GROUP BY n.queue LOOP
      PERFORM pg_notify(:'channel', json_build_object('queue', r.queue, 'due', r.due, 'runAt', r.run_at)::text);
    END LOOP;
  ELSE
    FOR r IN SELECT n.queue, bool_or(n.run_at <= now()) AS due, min(n.run_at) FILTER (WHERE n.run_at > now()) AS run_at
             FROM new_rows n JOIN old_rows o ON o.id = n.id
             WHERE n.status = 'queued'
               AND (o.status <> 'queued' OR o.run_at <> n.run_at OR o.queue <> n.queue)
             GROUP BY n.queue LOOP
      PERFORM pg_notify(:'channel', json_build_object('queue', r.queue, 'due', r.due, 'runAt', r.run_at)::text);
    END LOOP;
  END IF;
  RETURN NULL;
END
$$;
