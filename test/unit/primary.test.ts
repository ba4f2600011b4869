// Multi-host URLs and the primary locator, without a database: which URL each host gets, which
// host is tried next, when the state changes (and is logged once), the back-off between passes.
import { expect } from 'chai';
import { loadConfig } from '../../src/config/load.js';
import { PrimaryLocator } from '../../src/db/primary.js';
import { locatedTarget, parseDatabaseUrl } from '../../src/db/target.js';
import { capturingLogger } from '../support/faults.js';

describe('multi-host database URLs', () => {
  it('splits a libpq multi-host URL into one URL per host, keeping credentials, database and parameters', () => {
    const t = parseDatabaseUrl('postgres://app:pw@db1:5432,db2:6432,[::1]/jobs?target_session_attrs=read-write&sslmode=disable');
    expect(t.hosts).to.deep.equal([{ host: 'db1', port: 5432 }, { host: 'db2', port: 6432 }, { host: '[::1]', port: 5432 }]);
    expect(t.requirePrimary).to.equal(true);
    expect([0, 1, 2].map((i) => t.urlFor(i))).to.deep.equal([
      'postgres://app:pw@db1:5432/jobs?sslmode=disable',
      'postgres://app:pw@db2:6432/jobs?sslmode=disable',
      'postgres://app:pw@[::1]:5432/jobs?sslmode=disable',
    ]);
  });

  it('requires a primary for several hosts by default, and not with target_session_attrs=any', () => {
    expect(parseDatabaseUrl('postgres://h1,h2/db').requirePrimary).to.equal(true);
    expect(parseDatabaseUrl('postgres://h1,h2/db?target_session_attrs=any').requirePrimary).to.equal(false);
    expect(parseDatabaseUrl('postgres://h1/db?target_session_attrs=primary').requirePrimary).to.equal(true);
  });

  it('leaves a plain single-host URL to node-postgres', () => {
    expect(locatedTarget('postgres://app@db:5432/jobs')).to.equal(undefined);
    expect(locatedTarget('postgres://app@db:5432/jobs?target_session_attrs=any')).to.equal(undefined);
    expect(locatedTarget('postgres://app@db:5432/jobs?target_session_attrs=read-write')?.hosts).to.have.length(1);
  });

  it('refuses bad URLs in the config with the key and what is wrong', () => {
    const error = (url: string) => {
      try {
        loadConfig({ env: { DATABASE_URL: url } });
      } catch (err) {
        return (err as Error).message;
      }
      return 'no error';
    };
    expect(error('postgres://h1,,h2/db')).to.match(/database\.url.*invalid host ""/);
    expect(error('postgres://h1:5432,h2:99999/db')).to.match(/database\.url.*invalid port in "h2:99999"/);
    expect(error('postgres://h1,h2/db?target_session_attrs=standby')).to.match(/database\.url.*target_session_attrs=standby/);
    expect(loadConfig({ env: { DATABASE_URL: 'postgres://u:pw@h1:5432,h2:5432/db?target_session_attrs=read-write' } }).database.url).to.contain('h2:5432');
    expect(loadConfig({ env: { SLUICE_LISTEN_URL: 'postgres://h1,h2/db', SLUICE_POOLER: 'transaction' } }).database).to.include({
      listenUrl: 'postgres://h1,h2/db',
      pooler: 'transaction',
    });
    expect(() => loadConfig({ env: { SLUICE_POOLER: 'session' } })).to.throw(/database\.pooler/);
  });
});

describe('the primary locator', () => {
  const setup = () => {
    let now = 1_000_000;
    const { log, lines } = capturingLogger();
    const locator = new PrimaryLocator(parseDatabaseUrl('postgres://h1:5432,h2:5432/db'), { log, now: () => now, random: () => 1 });
    const messages = () => lines.map((l) => JSON.parse(l).msg as string);
    return { locator, messages, advance: (ms: number) => (now += ms) };
  };
  const down = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });

  it('tries the hosts in order and stays on the primary it found, logging nothing at a clean start', () => {
    const { locator, messages } = setup();
    expect(locator.candidate()).to.equal(0);
    locator.failed(0, down);
    expect(locator.candidate()).to.equal(1);
    expect(locator.waitMs(), 'the next host is tried at once').to.equal(0);
    locator.confirmed(1);
    expect(locator.candidate()).to.equal(1);
    expect(locator.reachable).to.equal(true);
    expect(locator.failovers, 'a first primary is no failover').to.equal(0);
    expect(messages()).to.deep.equal([]);
  });

  it('logs one line per state change: lost, searching, found after N s; and counts the failover', () => {
    const { locator, messages, advance } = setup();
    locator.confirmed(0);
    for (let pass = 0; pass < 5; pass++) {
      locator.failed(locator.candidate(), down);
      locator.failed(locator.candidate(), new Error('h2:5432 is not a writable primary (in recovery)'));
      expect(locator.reachable).to.equal(false);
      expect(locator.waitMs(), 'back-off after a full pass').to.be.greaterThan(0);
      advance(locator.waitMs());
    }
    advance(2500);
    locator.confirmed(1);
    expect(locator.failovers).to.equal(1);
    expect(messages()).to.have.length(3);
    expect(messages()[0]).to.equal('database primary lost at h1:5432; trying the hosts in order');
    expect(messages()[1]).to.equal('no writable primary reachable among h1:5432, h2:5432; searching with back-off');
    expect(messages()[2]).to.match(/^database primary found at h2:5432 after \d+\.\d s$/);
  });

  it('doubles the back-off between passes up to 5 s', () => {
    const { locator, advance } = setup();
    const waits: number[] = [];
    for (let pass = 0; pass < 8; pass++) {
      locator.failed(locator.candidate(), down);
      locator.failed(locator.candidate(), down);
      waits.push(locator.waitMs());
      advance(locator.waitMs());
    }
    expect(waits).to.deep.equal([250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
  });

  it('ignores a stale "in recovery" from an attempt begun before the promoted primary was confirmed', () => {
    const { locator, messages } = setup();
    locator.confirmed(0);
    locator.failed(0, down, locator.beginAttempt());
    const early = locator.beginAttempt(); // reaches h2 before its promotion...
    locator.confirmed(1); // ...another attempt finds it promoted...
    locator.failed(1, new Error('h2:5432 is not a writable primary (in recovery)'), early); // ...and the early answer comes last
    expect(locator.reachable).to.equal(true);
    expect(locator.candidate()).to.equal(1);
    locator.failed(1, down, locator.beginAttempt());
    expect(locator.reachable, 'an attempt begun after the confirmation counts').to.equal(false);
    expect(messages().filter((m) => m.startsWith('database primary lost'))).to.have.length(2);
  });

  it('suspect(): older connections are no longer reused, and the next connect checks the same host again', () => {
    const { locator, messages } = setup();
    locator.confirmed(0);
    const before = locator.generation;
    locator.suspect(0);
    expect(locator.generation).to.equal(before + 1);
    expect(locator.candidate()).to.equal(0);
    locator.confirmed(0);
    expect(locator.failovers).to.equal(0);
    expect(messages(), 'a terminated backend on a healthy primary is not logged as a loss').to.deep.equal([]);
  });
});
