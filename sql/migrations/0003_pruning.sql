-- Version 3: finding finished jobs by age, for the pruner. BRIN, because finished_at grows with
-- the table's physical order and a BRIN index costs almost nothing on the completion path.
CREATE INDEX jobs_finished_at_brin ON :"schema".jobs USING brin (finished_at);
