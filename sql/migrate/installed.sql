-- Whether sluice was ever migrated in the schema (the migrations table exists).
SELECT to_regclass(quote_ident(:'schema') || '.migrations') IS NOT NULL AS installed
