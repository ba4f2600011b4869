INSERT INTO :"schema".migrations (version, name) VALUES (:version, :name)
