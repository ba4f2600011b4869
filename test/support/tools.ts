// The external programs the topology tests run (Debian packages), and a gate for tests that need
// one: without it a test is skipped with the reason printed, or fails when CI demands every tool
// (SLUICE_TEST_REQUIRE_TOOLS=1), so a broken CI image cannot pass by skipping everything.
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';

export const PG15_BIN_DIR = '/usr/lib/postgresql/15/bin';
export const PGBOUNCER_BIN = '/usr/sbin/pgbouncer';
export const PATRONI_BIN = '/usr/bin/patroni';
export const ETCD_BIN = '/usr/bin/etcd';
/** Debian's Python, which python3-psycopg installs into (a python3 earlier on PATH may be another). */
export const PYTHON_BIN = '/usr/bin/python3';

/** The Debian package that installs each tool, for the skip message. */
const PACKAGES: Record<string, string> = {
  pgbouncer: 'pgbouncer',
  patroni: 'patroni',
  etcd: 'etcd-server',
  pg_basebackup: 'postgresql-15',
  psycopg: 'python3-psycopg',
  chromium: 'chromium',
};

/** Skips the test (or the suite, from a `before` hook) when `binaryPath` is not an executable. */
export function requireTool(ctx: Mocha.Context, name: string, binaryPath: string): void {
  if (isExecutable(binaryPath)) return;
  missing(ctx, name, `${binaryPath} is missing`);
}

/** The same gate for Python's psycopg (3), which the cross-language test enqueues with. */
export function requirePsycopg(ctx: Mocha.Context): void {
  const probe = spawnSync(PYTHON_BIN, ['-c', 'import psycopg'], { encoding: 'utf8' });
  if (probe.status === 0) return;
  missing(ctx, 'psycopg', probe.error ? `${PYTHON_BIN} is missing` : `${PYTHON_BIN} cannot import psycopg`);
}

function missing(ctx: Mocha.Context, name: string, what: string): void {
  const hint = `apt-get install ${PACKAGES[name] ?? name}`;
  if (process.env.SLUICE_TEST_REQUIRE_TOOLS === '1') {
    throw new Error(`${name} is required (SLUICE_TEST_REQUIRE_TOOLS=1) but ${what} (${hint})`);
  }
  // the spec reporter prints skipped tests without a reason: print it where the suite starts
  console.log(`      skipped: ${name} is not installed: ${what} (${hint})`);
  ctx.skip();
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
