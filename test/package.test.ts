// sluice as a library, the way a user gets it: `npm pack`, installed into an empty project,
// imported with its types, and run against a real PostgreSQL. Also the installed `sluice` command.
import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createTestDatabase } from './support/db.js';
import { root } from './support/cli.js';

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

const APP = `
import pg from 'pg';
import { Worker, addJob, addJobs, PermanentError, applyRoles, migrate, getJob, listJobs, cancelJob, retryJob, type JobContext } from 'sluice';

const url = process.argv[2]!;
const pool = new pg.Pool({ connectionString: url, max: 2 });
await migrate(pool, 'sluice');
const roles = await applyRoles(pool, 'sluice');
const worker = new Worker({
  config: { database: { url }, worker: { concurrency: 2, pollMs: 60000 }, http: { enabled: false }, log: { level: 'silent' } },
  tasks: {
    greet: async (payload: { name: string }, ctx: JobContext) => ({ greeting: \`hello \${payload.name}\`, attempt: ctx.job.attempt }),
    refuse: async () => { throw new PermanentError('not today'); },
  },
});
await worker.start();
// enqueueing inside the application's own transaction: the job exists once it commits
const client = await pool.connect();
await client.query('BEGIN');
const greet = await addJob(client, { task: 'greet', payload: { name: 'ada' } });
await client.query('COMMIT');
client.release();
const [refuse, later] = await addJobs(pool, [{ task: 'refuse' }, { task: 'greet', payload: { name: 'x' }, runAt: new Date(Date.now() + 3600000) }]);
const settled = async (id: string) => {
  for (let i = 0; i < 600; i++) {
    const j = await getJob(pool, 'sluice', id);
    if (j.status === 'completed' || j.status === 'failed') return j;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('job ' + id + ' did not finish');
};
const done = await settled(greet);
const failed = await settled(refuse!);
const cancelled = await cancelJob(pool, 'sluice', later!);
const retried = await retryJob(pool, 'sluice', refuse!);
const listed = await listJobs(pool, 'sluice', { task: 'greet' });
await worker.stop();
await pool.end();
console.log(JSON.stringify({ roles: [roles.producer, roles.worker], result: done.result, failed: failed.lastError?.split('\\n')[0], cancelled: cancelled.status, retried: retried.status, listed: listed.length }));
`;

describe('supported Node.js versions', () => {
  it('are stated in the README as package.json declares them, and this Node.js is one of them', async () => {
    const { readFileSync } = await import('node:fs');
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
    expect(pkg.engines.node).to.equal('>=20');
    expect(readFileSync(path.join(root, 'README.md'), 'utf8')).to.include('Needs Node.js 20 or newer');
    expect(Number(process.versions.node.split('.')[0])).to.be.at.least(20);
    // the container image runs a Node.js the package supports
    expect(readFileSync(path.join(root, 'Dockerfile'), 'utf8')).to.match(/^ARG NODE_IMAGE=node:(2[0-9])-/m);
  });
});

describe('sluice as an installed package', function () {
  this.timeout(300_000);
  let dir: string;
  let url: string;

  before(async () => {
    url = await createTestDatabase();
    dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-package-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('installs from its tarball, type-checks, and runs jobs from a user\'s code', () => {
    const packed = path.join(dir, 'packed');
    mkdirSync(packed);
    execFileSync(npm, ['pack', '--silent', '--pack-destination', packed], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const tarball = path.join(packed, readdirSync(packed).find((f) => f.endsWith('.tgz'))!);
    const app = path.join(dir, 'app');
    mkdirSync(app);
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'user-app', private: true, type: 'module' }));
    const install = spawnSync(npm, ['install', tarball, '--no-audit', '--no-fund', '--prefer-offline', '--omit=optional'], { cwd: app, encoding: 'utf8' });
    expect(install.status, install.stderr).to.equal(0);
    // (npm 11 lists the package's own prepare script, which a tarball install does not run)
    expect(install.stderr, 'no engine or deprecation warnings').to.not.match(/EBADENGINE|deprecated/i);

    writeFileSync(path.join(app, 'app.ts'), APP);
    writeFileSync(
      path.join(app, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, skipLibCheck: true, types: [], typeRoots: [path.join(root, 'node_modules', '@types')], outDir: 'out' }, files: ['app.ts'] }),
    );
    const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app], { cwd: app, encoding: 'utf8' });
    expect(tsc.status, tsc.stdout + tsc.stderr).to.equal(0);

    const run = spawnSync(process.execPath, [path.join(app, 'out', 'app.js'), url], { cwd: app, encoding: 'utf8', timeout: 120_000 });
    expect(run.status, run.stderr).to.equal(0);
    expect(JSON.parse(run.stdout.trim().split('\n').at(-1)!)).to.deep.equal({
      roles: ['sluice_producer', 'sluice_worker'],
      result: { greeting: 'hello ada', attempt: 1 },
      failed: 'PermanentError: not today',
      cancelled: 'cancelled',
      retried: 'queued',
      listed: 2,
    });

    // the installed command, on plain node: a task module with a syntax error is named with its line
    const tasks = path.join(dir, 'tasks');
    mkdirSync(tasks);
    writeFileSync(path.join(tasks, 'broken.js'), 'export default async function (payload) {\n  return { ok: tru e };\n}\n');
    const start = spawnSync(path.join(app, 'node_modules', '.bin', 'sluice'), ['start', '--tasks', tasks], {
      cwd: app,
      encoding: 'utf8',
      env: { PATH: process.env.PATH, DATABASE_URL: url, SLUICE_HTTP_ENABLED: 'false', SLUICE_LOG_FORMAT: 'json' },
      timeout: 60_000,
    });
    expect(start.status).to.equal(2);
    expect(start.stderr).to.include(`${path.join(tasks, 'broken.js')}:2: return { ok: tru e };`);
  });
});
