-- A login role named by the roles command, and whether it exists.
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = :name
