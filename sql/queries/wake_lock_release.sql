-- Gives the queue's wake lock back: the runner is looking for work by itself now.
SELECT pg_advisory_unlock(:"schema".wake_lock_key(:queue)) AS released
