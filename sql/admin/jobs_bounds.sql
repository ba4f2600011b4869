-- The lowest and highest job id (two look-ups at the ends of the primary key), so a page of the
-- dashboard's job list knows where its scan window may start and end.
SELECT (SELECT min(id) FROM :"schema".jobs) AS min_id, (SELECT max(id) FROM :"schema".jobs) AS max_id
