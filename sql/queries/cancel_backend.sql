-- Cancels the statement a backend of this role is running (a VACUUM at shutdown).
SELECT pg_cancel_backend(:pid)
