SELECT :"schema".resume_queue(:queue)
