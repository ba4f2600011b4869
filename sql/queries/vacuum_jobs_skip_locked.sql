-- Behind a transaction pooler no session lock can span VACUUM (each statement may go to another
-- server connection): SKIP_LOCKED skips the table while another VACUUM (another worker's, or
-- autovacuum) holds it, so two workers never queue up behind each other.
VACUUM (SKIP_LOCKED) :"schema".jobs
