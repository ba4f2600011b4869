// "Any program in any language enqueues with one SQL call": a Python program (psycopg 3) adds a
// job, a sluice worker runs it, and the Python program reads the result back.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createTestDatabase } from './support/db.js';
import { PYTHON_BIN, requirePsycopg } from './support/tools.js';
import { migrated, startWorker, stopWorkers } from './support/worker.js';

const PRODUCER = `
import json, sys, time
import psycopg

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    job_id = conn.execute("SELECT sluice.add_job('greet', %s::jsonb, job_key => %s)", [json.dumps({"name": "Grace"}), "py-1"]).fetchone()[0]
    for _ in range(1200):
        status, result = conn.execute("SELECT status, result FROM sluice.jobs WHERE id = %s", [job_id]).fetchone()
        if status in ("completed", "failed"):
            break
        time.sleep(0.05)
    print(json.dumps({"id": job_id, "status": status, "result": result}))
`;

describe('enqueueing from Python', function () {
  before(function () {
    requirePsycopg(this);
  });
  after(() => stopWorkers());

  it('adds a job with one SQL call, and reads its result once a worker has run it', async () => {
    const url = await createTestDatabase();
    await (await migrated(url)).end();
    await startWorker(url, { greet: async (p: { name: string }) => ({ greeting: `hello ${p.name}` }) });
    const py = spawn(PYTHON_BIN, ['-c', PRODUCER, url.replace(/^postgres:/, 'postgresql:')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    py.stdout.on('data', (d) => (out += d));
    py.stderr.on('data', (d) => (err += d));
    const code = await new Promise<number | null>((resolve) => py.once('close', resolve));
    expect(code, err).to.equal(0);
    const r = JSON.parse(out);
    expect(r).to.include({ status: 'completed' });
    expect(r.result).to.deep.equal({ greeting: 'hello Grace' });
    expect(r.id).to.be.a('number');
  });
});
