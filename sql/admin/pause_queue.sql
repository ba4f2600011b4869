SELECT :"schema".pause_queue(:queue)
