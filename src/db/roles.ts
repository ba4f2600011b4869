// Least-privilege roles (sql/roles.sql): <schema>_producer may only enqueue and read its own
// jobs; <schema>_worker may run them.
import type pg from 'pg';
import { readSqlFile } from './sql.js';
import { withClient } from './pool.js';

export async function applyRoles(pool: pg.Pool, schema: string): Promise<{ producer: string; worker: string }> {
  const sql = readSqlFile('roles.sql', schema);
  await withClient(pool, (c) => c.query(sql));
  return { producer: `${schema}_producer`, worker: `${schema}_worker` };
}
