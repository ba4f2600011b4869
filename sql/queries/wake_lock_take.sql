-- Takes the queue's wake lock on the LISTEN connection (never waiting). 'held': taken (or already
-- held by this session); 'producers': transactions that inserted jobs without notifying still
-- hold it shared (their jobs become visible when they end); 'worker': another worker's runner
-- holds it, so producers notify, and this worker hears them too.
SELECT CASE
  WHEN pg_try_advisory_lock(:"schema".wake_lock_key(:queue)) THEN 'held'
  WHEN pg_try_advisory_lock_shared(:"schema".wake_lock_key(:queue)) AND pg_advisory_unlock_shared(:"schema".wake_lock_key(:queue)) THEN 'producers'
  ELSE 'worker'
END AS state
