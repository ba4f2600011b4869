SELECT version FROM :"schema".migrations
