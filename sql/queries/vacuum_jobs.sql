VACUUM :"schema".jobs
