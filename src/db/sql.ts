// SQL lives in sql/ files. The only text ever spliced into it is the schema name, after it has
// been checked to be a plain lowercase identifier; every other value travels as a parameter.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** Folder of the sql/ files; the same relative place from src/db and from dist/db. */
export const sqlDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'sql');

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,47}$/;

export function assertIdentifier(name: string): string {
  if (!IDENTIFIER.test(name)) {
    throw new Error(
      `${JSON.stringify(name)} is not a valid schema name: use 1-48 lowercase letters, digits and _, not starting with a digit`,
    );
  }
  return name;
}

/** NOTIFY channel of a schema's jobs table; the SQL side names it the same way. */
export function channelFor(schema: string): string {
  return `${assertIdentifier(schema)}_jobs`;
}

/** Names a schema's sql/ files may refer to; each is a checked identifier. */
function sqlNames(schema: string): Record<string, string> {
  assertIdentifier(schema);
  return {
    schema,
    channel: channelFor(schema),
    producer_role: `${schema}_producer`,
    worker_role: `${schema}_worker`,
  };
}

/**
 * Fills the psql-style placeholders of a sql/ file: `:"name"` becomes a quoted identifier and
 * `:'name'` a string literal, for the names in sqlNames().
 */
export function renderSql(text: string, schema: string): string {
  let out = text;
  for (const [name, value] of Object.entries(sqlNames(schema))) {
    out = out.replaceAll(`:"${name}"`, `"${value}"`).replaceAll(`:'${name}'`, `'${value}'`);
  }
  return out;
}

export function readSqlFile(relative: string, schema: string): string {
  return renderSql(readFileSync(path.join(sqlDir, relative), 'utf8'), schema);
}

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** sql/migrations/NNNN_name.sql, in version order. */
export function loadMigrations(schema: string): Migration[] {
  return readdirSync(path.join(sqlDir, 'migrations'))
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((f) => ({
      version: Number(f.slice(0, 4)),
      name: f.slice(5, -4),
      sql: readSqlFile(path.join('migrations', f), schema),
    }));
}
