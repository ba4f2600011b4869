-- Version 12: an insert notifies only when a worker waits for its queue. PostgreSQL serialises
-- the commits of all transactions that NOTIFY, so a NOTIFY on every enqueueing transaction capped
-- the application's own commits (32 producers: 3,080 tps against 12,290 without the trigger).
-- A worker's runner that found its queue empty holds the queue's wake lock, a session advisory
-- lock on its LISTEN connection. The insert tries the same lock in shared mode, held until its
-- transaction ends: when it cannot have it, a runner waits, and the insert notifies; when it can,
-- no runner waits, and none can start to wait until this transaction has ended (the lock is
-- exclusive against shared holders), after which the runner claims once more and sees the job.
-- The decision is made at insert time and kept until commit, so a producer's isolation level, a
-- rollback or a late commit change nothing. Jobs due later always notify: the worker sets a
-- timer from run_at. docs/notifications.md tells the whole protocol.

-- The lock's key: one per schema and queue.
CREATE FUNCTION :"schema".wake_lock_key(queue text) RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT hashtextextended('sluice.wake.' || :'schema' || '.' || queue, 0)
$$;

CREATE OR REPLACE FUNCTION :"schema".notify_runnable_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT n.queue, bool_or(n.run_at <= now()) AS due, min(n.run_at) FILTER (WHERE n.run_at > now()) AS run_at
           FROM new_rows n WHERE n.status = 'queued' AND n.queue IS NOT NULL GROUP BY n.queue LOOP
    IF r.run_at IS NOT NULL OR NOT pg_try_advisory_xact_lock_shared(:"schema".wake_lock_key(r.queue)) THEN
      PERFORM pg_notify(:'channel', json_build_object('queue', r.queue, 'due', r.due, 'runAt', r.run_at)::text);
    END IF;
  END LOOP;
  RETURN NULL;
END
$$;
