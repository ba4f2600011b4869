SELECT coalesce(max(version), 0)::int AS version FROM :"schema".migrations
