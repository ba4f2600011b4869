-- Version 6: vacuum the jobs table early. Every claim and completion leaves a dead row version,
-- and a claim walks past the dead entries at the head of the runnable index until VACUUM
-- removes them. At the default trigger (20% of the table dead) a table holding a million
-- finished jobs piles up 200,000 dead versions first, and claiming slows down several times
-- meanwhile. Vacuum after 1% plus 1,000 rows instead, and analyse as often, so plans follow the
-- churn. (Storage parameters only: a brief lock, no rewrite.)
ALTER TABLE :"schema".jobs SET (
  autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0.01,
  autovacuum_analyze_scale_factor = 0.02
);
