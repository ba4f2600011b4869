// A statement from a sql/ file with named parameters. The file writes `:name` where a value goes;
// loading turns each into `$n` and remembers the order, so callers pass `{ name: value }` and
// never count positions. This is also the only place that names prepared statements: one flag
// (`prepared: false`, as a transaction pooler needs) turns them all into unnamed ones.
import type pg from 'pg';

export interface Queryable {
  query: pg.ClientBase['query'];
}

export interface StatementOptions {
  /** Prepared once per connection under `name` (the default), or sent unnamed every time. */
  prepared: boolean;
  /**
   * Parameters written into the text as integer literals instead of being sent: one prepared
   * statement per value. PostgreSQL re-plans `LIMIT $1` at every call but plans `LIMIT 50` once.
   */
  literals?: readonly string[];
}

/** At most this many literal variants of one statement (each is a prepared statement per connection). */
const MAX_VARIANTS = 256;

export class Statement<P extends object = Record<string, never>, R extends pg.QueryResultRow = pg.QueryResultRow> {
  /** Parameter names in the order of $1, $2, ... (camelCase, as callers pass them). */
  readonly params: readonly string[];
  /** The text sent to the server ($n placeholders; literals still as `:name`). */
  readonly text: string;
  private readonly variants = new Map<string, { name: string | undefined; text: string }>();

  constructor(
    readonly name: string,
    sql: string,
    private readonly opts: StatementOptions,
  ) {
    const bound = bindParameters(sql, new Set(opts.literals ?? []));
    this.text = bound.text;
    this.params = bound.names.map(camelCase);
  }

  /** The statement as node-postgres takes it. */
  config(params: P): pg.QueryConfig {
    const values = new Array(this.params.length);
    for (let i = 0; i < this.params.length; i++) {
      const v = (params as Record<string, unknown>)[this.params[i]!];
      if (v === undefined) throw new TypeError(`statement ${this.name} needs the parameter ${this.params[i]}`);
      values[i] = v;
    }
    const { name, text } = this.opts.literals?.length ? this.variant(params) : { name: this.opts.prepared ? this.name : undefined, text: this.text };
    return name ? { name, text, values } : { text, values };
  }

  run(db: Queryable, params: P): Promise<pg.QueryResult<R>> {
    return db.query<R>(this.config(params));
  }

  private variant(params: P): { name: string | undefined; text: string } {
    const literals = this.opts.literals!.map((key) => {
      const v = (params as Record<string, unknown>)[camelCase(key)];
      if (!Number.isSafeInteger(v)) throw new TypeError(`statement ${this.name}: literal ${key} must be an integer, got ${String(v)}`);
      return [key, v as number] as const;
    });
    const suffix = literals.map(([, v]) => v).join('_');
    let found = this.variants.get(suffix);
    if (!found) {
      if (this.variants.size >= MAX_VARIANTS) throw new RangeError(`statement ${this.name}: more than ${MAX_VARIANTS} literal variants`);
      let text = this.text;
      for (const [key, v] of literals) text = text.replace(new RegExp(`(?<![:\\w]):${key}\\b`, 'g'), String(v));
      found = { name: this.opts.prepared ? `${this.name}_${suffix}` : undefined, text };
      this.variants.set(suffix, found);
    }
    return found;
  }
}

function camelCase(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/**
 * Replaces `:name` with `$n` outside string literals, quoted identifiers, comments and
 * dollar-quoted bodies; `::type` casts and the names in `literals` are left alone.
 */
export function bindParameters(sql: string, literals: ReadonlySet<string> = new Set()): { text: string; names: string[] } {
  const names: string[] = [];
  let out = '';
  let i = 0;
  const copyUntil = (end: number) => {
    out += sql.slice(i, end);
    i = end;
  };
  while (i < sql.length) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if (c === "'") {
      // a string literal; E'...' strings escape with backslashes, all double a quote
      const escapes = /[eE]/.test(sql[i - 1] ?? '') && !/\w/.test(sql[i - 2] ?? '');
      let j = i + 1;
      while (j < sql.length) {
        if (escapes && sql[j] === '\\') j += 2;
        else if (sql[j] === "'" && sql[j + 1] === "'") j += 2;
        else if (sql[j] === "'") break;
        else j++;
      }
      copyUntil(j + 1);
    } else if (c === '"') {
      copyUntil(sql.indexOf('"', i + 1) + 1 || sql.length);
    } else if (c === '-' && next === '-') {
      const eol = sql.indexOf('\n', i);
      copyUntil(eol < 0 ? sql.length : eol);
    } else if (c === '/' && next === '*') {
      const end = sql.indexOf('*/', i + 2);
      copyUntil(end < 0 ? sql.length : end + 2);
    } else if (c === '$' && /^\$[A-Za-z_]*\$/.test(sql.slice(i))) {
      const tag = /^\$[A-Za-z_]*\$/.exec(sql.slice(i))![0];
      const end = sql.indexOf(tag, i + tag.length);
      copyUntil(end < 0 ? sql.length : end + tag.length);
    } else if (c === ':' && next === ':') {
      copyUntil(i + 2);
    } else if (c === ':' && next !== undefined && /[a-z_]/.test(next)) {
      const name = /^[a-z_][a-z0-9_]*/.exec(sql.slice(i + 1))![0];
      if (literals.has(name)) {
        copyUntil(i + 1 + name.length);
        continue;
      }
      let n = names.indexOf(name);
      if (n < 0) n = names.push(name) - 1;
      out += `$${n + 1}`;
      i += 1 + name.length;
    } else {
      copyUntil(i + 1);
    }
  }
  return { text: out, names };
}
