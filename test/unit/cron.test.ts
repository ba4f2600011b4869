import { expect } from 'chai';
import { checkCron, type CronEntry } from '../../src/config/cron.js';
import { CronScheduler, type CronStore } from '../../src/cron/scheduler.js';
import { silentLogger } from '../../src/observe/logger.js';
import { FakeClock } from '../support/clock.js';

/** The database side, shared by every scheduler of a test: a tick is recorded once, for good. */
function sharedStore() {
  const ticks = new Map<string, Date[]>();
  const jobs: { name: string; tick: string }[] = [];
  let failing = false;
  const store: CronStore = {
    async enqueue(entry, tick) {
      if (failing) throw new Error('connection refused');
      const list = ticks.get(entry.name) ?? [];
      if (list.some((t) => t.getTime() === tick.getTime())) return null;
      list.push(tick);
      ticks.set(entry.name, list);
      jobs.push({ name: entry.name, tick: tick.toISOString() });
      return String(jobs.length);
    },
    async lastTick(name) {
      const list = ticks.get(name) ?? [];
      return list.length ? new Date(Math.max(...list.map((t) => t.getTime()))) : null;
    },
  };
  return { store, jobs, setFailing: (f: boolean) => (failing = f) };
}

const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

/** Advances in steps of `stepMs`, letting the schedulers' awaits run between steps. */
async function run(clock: FakeClock, ms: number, stepMs = 100): Promise<void> {
  for (let t = 0; t < ms; t += stepMs) {
    clock.advance(stepMs);
    await settle();
  }
}

function scheduler(entries: CronEntry[], store: CronStore, clock: FakeClock, offsetMs = 0) {
  return new CronScheduler({ entries, store, clock, clockOffsetMs: () => offsetMs, log: silentLogger() });
}

describe('recurring jobs (cron scheduler)', () => {
  const everySecond: CronEntry = { name: 'tick', schedule: '* * * * * *', task: 't' };

  it('three schedulers with clocks a second apart enqueue each tick once, none missing', async () => {
    const clock = new FakeClock(Date.UTC(2026, 11, 2, 12, 0, 0, 300));
    const { store, jobs } = sharedStore();
    // each measures its offset to the database clock differently (by up to a second)
    const all = [scheduler([everySecond], store, clock, 0), scheduler([everySecond], store, clock, 1000), scheduler([everySecond], store, clock, -1000)];
    for (const s of all) s.start();
    await settle();
    await run(clock, 30_000);
    for (const s of all) await s.stop();
    const ticks = jobs.map((j) => Date.parse(j.tick)).sort((a, b) => a - b);
    expect(new Set(ticks).size, 'no tick twice').to.equal(ticks.length);
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!, 'no tick missing').to.equal(1000);
    expect(ticks.length).to.be.within(30, 32);
  });

  it('after downtime enqueues exactly `backfill` missed ticks, the latest ones, then goes on', async () => {
    const clock = new FakeClock(Date.UTC(2026, 11, 2, 12, 0, 0, 500));
    const { store, jobs } = sharedStore();
    const entry: CronEntry = { ...everySecond, backfill: 2 };
    const first = scheduler([entry], store, clock);
    first.start();
    await run(clock, 5000);
    await first.stop();
    const lastBefore = jobs.at(-1)!.tick;
    await run(clock, 10_000); // down: 10 ticks missed
    const before = jobs.length;
    const second = scheduler([entry], store, clock);
    second.start();
    await settle();
    const backfilled = jobs.slice(before).map((j) => j.tick);
    expect(backfilled).to.have.length(2);
    expect(Date.parse(backfilled[0]!) - Date.parse(lastBefore)).to.equal(9000);
    await run(clock, 3000);
    await second.stop();
    const after = jobs.slice(before).map((j) => Date.parse(j.tick));
    for (let i = 1; i < after.length; i++) expect(after[i]! - after[i - 1]!).to.equal(1000);
    // and with backfill 0 (the default) nothing missed is enqueued
    await run(clock, 10_000);
    const n = jobs.length;
    const third = scheduler([everySecond], store, clock);
    third.start();
    await settle();
    expect(jobs.length).to.equal(n);
    await run(clock, 1000);
    await third.stop();
    expect(jobs.length).to.equal(n + 1);
  });

  it('catches up ticks missed while the database was unreachable, without doubling any', async () => {
    const clock = new FakeClock(Date.UTC(2026, 11, 2, 12, 0, 0, 500));
    const shared = sharedStore();
    const s = scheduler([everySecond], shared.store, clock);
    s.start();
    await run(clock, 3000);
    shared.setFailing(true);
    await run(clock, 5000);
    shared.setFailing(false);
    await run(clock, 60_000, 250);
    await s.stop();
    const ticks = shared.jobs.map((j) => Date.parse(j.tick));
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).to.equal(1000);
  });

  it("follows croner's rules across a daylight-saving change (02:30 Berlin does not exist on 2026-03-29)", async () => {
    const clock = new FakeClock(Date.UTC(2026, 2, 27, 12, 0, 0));
    const { store, jobs } = sharedStore();
    const s = scheduler([{ name: 'nightly', schedule: '30 2 * * *', timezone: 'Europe/Berlin', task: 't' }], store, clock);
    s.start();
    await settle();
    await run(clock, 4 * 86_400_000, 3_600_000);
    await s.stop();
    expect(jobs.map((j) => j.tick)).to.deep.equal([
      '2026-03-28T01:30:00.000Z', // 02:30 CET
      '2026-03-29T01:00:00.000Z', // the clocks jump from 02:00 to 03:00: croner runs it at 03:00 CEST
      '2026-03-30T00:30:00.000Z', // 02:30 CEST
      '2026-03-31T00:30:00.000Z',
    ]);
  });

  it('arms one capped timer for a far tick instead of overflowing it', async () => {
    const clock = new FakeClock(Date.UTC(2026, 11, 2));
    const { store, jobs } = sharedStore();
    const s = scheduler([{ name: 'yearly', schedule: '0 0 1 1 *', task: 't' }], store, clock);
    s.start();
    await settle();
    expect(clock.delays.at(-1)).to.equal(2 ** 31 - 1);
    await run(clock, 31 * 86_400_000, 86_400_000);
    await s.stop();
    expect(jobs.map((j) => j.tick)).to.deep.equal(['2027-01-01T00:00:00.000Z']);
  });

  describe('config entries', () => {
    const bad: [string, unknown, RegExp][] = [
      ['a bad schedule', [{ name: 'r', schedule: '61 * * * *', task: 't' }], /entry 1 \(r\): schedule "61 \* \* \* \*" is not valid/],
      ['too few fields', [{ name: 'r', schedule: '* * *', task: 't' }], /entry 1 \(r\): schedule "\* \* \*" has 3 fields/],
      ['a bad time zone', [{ name: 'r', schedule: '0 3 * * *', timezone: 'Mars/Base', task: 't' }], /entry 1 \(r\): timezone "Mars\/Base" is not an IANA/],
      ['no task', [{ name: 'r', schedule: '0 3 * * *' }], /entry 1 \(r\): task must be a non-empty name/],
      ['a blank task', [{ name: 'r', schedule: '0 3 * * *', task: ' ' }], /entry 1 \(r\): task must be/],
      ['a name with a colon', [{ name: 'a:b', schedule: '0 3 * * *', task: 't' }], /entry 1 \(a:b\): name must be/],
      ['a name twice', [{ name: 'r', schedule: '0 3 * * *', task: 't' }, { name: 'r', schedule: '0 4 * * *', task: 't' }], /entry 2 \(r\): the name is used/],
      ['an unknown key', [{ name: 'r', schedule: '0 3 * * *', task: 't', tz: 'UTC' }], /entry 1 \(r\): unknown key "tz"/],
      ['a negative backfill', [{ name: 'r', schedule: '0 3 * * *', task: 't', backfill: -1 }], /entry 1 \(r\): backfill must be an integer >= 0/],
    ];
    for (const [what, value, message] of bad) {
      it(`refuses ${what}, naming the entry`, () => expect(() => checkCron(value)).to.throw(message));
    }
    it('accepts 5 and 6 fields, a time zone and every option', () => {
      expect(() =>
        checkCron([
          { name: 'nightly-report', schedule: '0 3 * * *', timezone: 'Europe/Berlin', task: 'report', payload: { kind: 'nightly' }, queue: 'reports', priority: 1, maxAttempts: 3, backfill: 2 },
          { name: 'every.second', schedule: '* * * * * *', task: 'tick' },
        ]),
      ).not.to.throw();
    });
  });
});
