-- The time limit of the session's next statements: VACUUM runs outside a transaction, so it
-- cannot SET LOCAL. vacuum_reset_timeout.sql gives the session back its own limit afterwards.
SELECT set_config('statement_timeout', :timeout, false)
