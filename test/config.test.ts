import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { loadConfig, redactedConfig } from '../src/config/load.js';
import { queueSlots } from '../src/config/queues.js';
import { configSchema } from '../src/config/schema.js';
import { ConfigError } from '../src/errors.js';

let dir: string;
function file(name: string, text: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, text);
  return p;
}
function loadError(opts: Parameters<typeof loadConfig>[0]): ConfigError {
  try {
    loadConfig(opts);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('configuration', () => {
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-config-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('has working defaults with no file and no environment', () => {
    const c = loadConfig({ env: {} });
    expect(c.database.schema).to.equal('sluice');
    expect(c.worker.queues).to.deep.equal(['default']);
    expect(c.http.host).to.equal('127.0.0.1');
  });

  it('takes worker.queues as a list or as a map with a concurrency per queue, naming the queue when wrong', () => {
    const c = loadConfig({ file: file('q.yaml', 'worker:\n  concurrency: 20\n  queues:\n    default: {}\n    emails: { concurrency: 5 }\n    reports:\n'), env: {} });
    expect(queueSlots(c.worker.queues, c.worker.concurrency)).to.deep.equal([
      { name: 'default', concurrency: 20 },
      { name: 'emails', concurrency: 5 },
      { name: 'reports', concurrency: 20 },
    ]);
    const fromApi = loadConfig({ env: {}, overrides: { worker: { queues: { a: { concurrency: 2 } } as never } } });
    expect(queueSlots(fromApi.worker.queues, 10)).to.deep.equal([{ name: 'a', concurrency: 2 }]);
    const zero = loadError({ file: file('q0.yaml', 'worker:\n  queues:\n    emails: { concurrency: 0 }\n'), env: {} });
    expect(zero.message).to.match(/worker\.queues: queue "emails": concurrency must be an integer >= 1, got 0/).and.to.include('q0.yaml');
    const unknown = loadError({ file: file('q1.yaml', 'worker:\n  queues:\n    emails: { concurrancy: 5 }\n'), env: {} });
    expect(unknown.message).to.match(/queue "emails": unknown setting "concurrancy" \(known: concurrency\)/);
    const empty = loadError({ file: file('q2.yaml', 'worker:\n  queues: {}\n'), env: {} });
    expect(empty.message).to.match(/worker\.queues: must be a non-empty list of queue names, or a map/);
    const twice = loadError({ env: { SLUICE_QUEUES: 'a,b,a' } });
    expect(twice.message).to.match(/names queue "a" twice/);
  });

  it('reads YAML and JSON files; the environment wins over the file, overrides over both', () => {
    const y = file('a.yaml', 'database:\n  poolSize: 7\nworker:\n  concurrency: 3\n  queues: [a, b]\n');
    const c = loadConfig({ file: y, env: { SLUICE_CONCURRENCY: '9', DATABASE_URL: 'postgres://u:pw@h/db' } });
    expect(c.database.poolSize).to.equal(7);
    expect(c.worker.concurrency).to.equal(9);
    expect(c.worker.queues).to.deep.equal(['a', 'b']);
    expect(c.database.url).to.equal('postgres://u:pw@h/db');
    const j = file('b.json', JSON.stringify({ worker: { concurrency: 2 } }));
    expect(loadConfig({ file: j, env: {}, overrides: { worker: { concurrency: 5 } } }).worker.concurrency).to.equal(5);
    expect(loadConfig({ env: { SLUICE_CONFIG: j } }).worker.concurrency).to.equal(2);
    expect(loadConfig({ env: { SLUICE_QUEUES: 'x, y' } }).worker.queues).to.deep.equal(['x', 'y']);
    const both = loadConfig({ env: { SLUICE_CONCURRENCY: '5', DATABASE_URL: '' }, overrides: { worker: { concurrency: 3 }, database: { url: 'postgres://h/db' } } });
    expect(both.worker.concurrency).to.equal(3);
    expect(both.database.url).to.equal('postgres://h/db');
  });

  it('names the key, the bad value and what is allowed', () => {
    const e1 = loadError({ file: file('c.yaml', 'worker:\n  concurrency: -2\n'), env: {} });
    expect(e1.message).to.contain('c.yaml').and.match(/worker\.concurrency: must be an integer >= 1: got -2/);
    const e2 = loadError({ file: file('d.yaml', 'worker:\n  concurency: 4\n'), env: {} });
    expect(e2.message).to.match(/worker\.concurency: unknown key/);
    const e3 = loadError({ file: file('e.yaml', 'database:\n  schema: "Robert; DROP TABLE x"\n'), env: {} });
    expect(e3.message).to.match(/database\.schema: .*is not a valid schema name/);
    const e4 = loadError({ file: file('f.yaml', 'log:\n  level: loud\n'), env: {} });
    expect(e4.message).to.match(/log\.level: must be one of the possible values: \["trace".*got "loud"/);
    const e5 = loadError({ env: { SLUICE_POOL_SIZE: 'many' } });
    expect(e5.message).to.match(/database\.poolSize: must be an integer >= 1/);
  });

  it('reports a missing or unparsable file by name', () => {
    expect(loadError({ file: path.join(dir, 'none.yaml'), env: {} }).message).to.match(/none\.yaml does not exist/);
    expect(loadError({ file: file('g.yaml', 'worker: [\n'), env: {} }).message).to.match(/g\.yaml cannot be parsed/);
    expect(loadError({ file: file('h.toml', 'x=1'), env: {} }).message).to.match(/must end in \.yaml, \.yml or \.json/);
  });

  it('never shows the database password, also not in errors', () => {
    const c = loadConfig({ env: { DATABASE_URL: 'postgres://app:s3cret@db:5432/jobs' } });
    const shown = JSON.stringify(redactedConfig(c));
    expect(shown).to.not.contain('s3cret');
    expect(shown).to.contain('postgres://app:***@db:5432/jobs');
    const e = loadError({ env: { DATABASE_URL: 'mysql://app:s3cret@db/x' } });
    expect(e.message).to.match(/database\.url/).and.not.contain('s3cret');
  });

  it('the example config lists every key with its default, and validates', () => {
    const example = path.resolve('config/sluice.example.yaml');
    const parsed = YAML.parse(readFileSync(example, 'utf8'));
    const walk = (schema: Record<string, unknown>, values: Record<string, unknown>, prefix: string) => {
      for (const [k, spec] of Object.entries(schema)) {
        const s = spec as { default?: unknown };
        expect(values, `${prefix}${k} in the example`).to.have.property(k);
        if (s && typeof s === 'object' && 'default' in s) expect(values[k], `${prefix}${k}`).to.deep.equal(s.default);
        else walk(spec as Record<string, unknown>, values[k] as Record<string, unknown>, `${prefix}${k}.`);
      }
    };
    walk(configSchema as unknown as Record<string, unknown>, parsed, '');
    loadConfig({ file: example, env: {} });
  });
});

describe('README config reference', () => {
  it('is the one generated from the schema (npm run docs:config)', async () => {
    const { configReference } = await import('../src/config/reference.js');
    const readme = readFileSync('README.md', 'utf8');
    const section = readme.split('<!-- config-reference:start -->')[1]?.split('<!-- config-reference:end -->')[0]?.trim();
    expect(section).to.equal(configReference());
  });
});
