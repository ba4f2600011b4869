-- Whether both group roles of the schema exist (then migrations keep their grants right).
SELECT count(*) = 2 AS exist FROM pg_roles WHERE rolname IN (:'producer_role', :'worker_role')
