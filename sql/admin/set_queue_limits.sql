-- All limits of a queue at once (NULL: no limit of that kind); :rate_period_ms in milliseconds.
SELECT :"schema".set_queue_limits(:queue, :concurrency, :key_concurrency, :rate_limit,
                                  :rate_period_ms * interval '1 millisecond')
