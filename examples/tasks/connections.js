// Task "connections": a handler that uses the database through ctx.db, which borrows a
// connection from the worker's own bounded pool for one statement and gives it back at once.
// It reports who holds connections on the server, the question sluice is built around.
//   sluice add connections
export default async function connections(_payload, ctx) {
  const { rows } = await ctx.db.query(
    `SELECT coalesce(nullif(application_name, ''), '(none)') AS application, count(*)::int AS sessions
     FROM pg_stat_activity WHERE backend_type = 'client backend'
     GROUP BY 1 ORDER BY 2 DESC, 1`,
  );
  const max = await ctx.db.query(`SELECT current_setting('max_connections')::int AS max`);
  return { maxConnections: max.rows[0].max, sessions: rows };
}

// A time limit for one attempt; the handler's ctx.signal fires when it is reached.
export const timeoutMs = 10_000;
