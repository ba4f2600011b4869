-- Refreshes the planner's view of the jobs table, which makes every session re-plan the
-- statements it prepared on it. SKIP_LOCKED: while another worker's ANALYZE or any VACUUM holds
-- the table, this one is skipped (a warning notice) rather than queued behind it.
ANALYZE (SKIP_LOCKED) :"schema".jobs
