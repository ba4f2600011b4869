-- The least-privilege group roles of a sluice schema, <schema>_producer and <schema>_worker,
-- created when missing. Applied by `sluice roles` or applyRoles() (which also grant them to
-- login roles), followed by grants.sql. Not a psql script: sluice fills in the names.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'producer_role') THEN
    CREATE ROLE :"producer_role" NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'worker_role') THEN
    CREATE ROLE :"worker_role" NOLOGIN;
  END IF;
END
$$;
