import { expect } from 'chai';
import type pg from 'pg';
import { loadQueries } from '../../src/db/queries.js';
import { Events } from '../../src/observe/events.js';
import { silentLogger } from '../../src/observe/logger.js';
import { Rescuer, rescueTiming } from '../../src/maintenance/rescuer.js';
import { PeriodicService } from '../../src/maintenance/service.js';
import { retryDelayMs } from '../../src/runner/retry-policy.js';
import { backoffMs } from '../../src/util/backoff.js';
import { FakeClock } from '../support/clock.js';

describe('backoff and retry timing', () => {
  it('doubles from the base up to the cap, with full or equal jitter', () => {
    const policy = { baseMs: 100, maxMs: 1000 };
    const low = () => 0;
    const high = () => 0.999999;
    expect([1, 2, 3, 4, 5, 10].map((a) => Math.round(backoffMs(a, { ...policy, jitter: 'equal' }, high)))).to.deep.equal([100, 200, 400, 800, 1000, 1000]);
    expect([1, 2, 3].map((a) => backoffMs(a, { ...policy, jitter: 'equal' }, low))).to.deep.equal([50, 100, 200]);
    expect(backoffMs(3, { ...policy, jitter: 'full' }, low)).to.equal(0);
    expect(backoffMs(1000, { ...policy, jitter: 'full' }, high)).to.be.at.most(1000);
  });

  it("gives a job's retry half to all of retryBaseMs doubled per attempt, never over retryMaxMs", () => {
    for (let attempt = 1; attempt <= 30; attempt++) {
      const exp = Math.min(3_600_000, 1000 * 2 ** (attempt - 1));
      for (let i = 0; i < 50; i++) {
        const d = retryDelayMs(attempt, { baseMs: 1000, maxMs: 3_600_000 });
        expect(d).to.be.within(exp / 2, exp);
      }
    }
  });
});

describe('rescue timing', () => {
  it('checks four times per rescueAfterMs and judges a worker dead after the rest of it', () => {
    expect(rescueTiming(15_000)).to.deep.equal({ deadAfterMs: 11_250, everyMs: 3_750 });
    // a check every 100 ms at least, whatever the window
    expect(rescueTiming(200)).to.deep.equal({ deadAfterMs: 100, everyMs: 100 });
  });

  it('judges nobody dead before its own heartbeats have succeeded for the dead-after window', async () => {
    let queried = 0;
    const pool = { connect: async () => { queried++; throw new Error('no database in a unit test'); } } as unknown as pg.Pool;
    let healthySince = 0;
    const rescuer = new Rescuer({ pool, queries: loadQueries('sluice'), rescueAfterMs: 15_000, healthySince: () => healthySince, events: new Events(), log: silentLogger() });
    expect(await rescuer.rescueNow()).to.deep.equal([]);
    healthySince = Date.now() - 11_000;
    expect(await rescuer.rescueNow()).to.deep.equal([]);
    expect(queried).to.equal(0);
    healthySince = Date.now() - 11_300;
    await rescuer.rescueNow().catch(() => undefined);
    expect(queried).to.equal(1);
  });
});

describe('periodic services', () => {
  class Counting extends PeriodicService {
    readonly name = 'counting';
    protected readonly failureMessage = 'counting failed';
    runs = 0;
    fail = false;
    protected async runOnce(): Promise<void> {
      this.runs++;
      if (this.fail) throw new Error('down');
    }
  }
  const settle = () => new Promise((r) => setImmediate(r));

  it('runs every interval, backs off while failing (up to its cap), and stops for good', async () => {
    const clock = new FakeClock();
    const s = new Counting({ everyMs: 1000, jitter: false, maxBackoff: 4, log: silentLogger(), clock });
    s.start();
    clock.advance(1000);
    await settle();
    expect(s.runs).to.equal(1);
    s.fail = true;
    const runsAt: number[] = [];
    for (let t = 0; t < 20_000; t += 100) {
      const before = s.runs;
      clock.advance(100);
      await settle();
      if (s.runs > before) runsAt.push(clock.now());
    }
    const gaps = runsAt.slice(1).map((t, i) => t - runsAt[i]!);
    // the first failed run came after 1 s; then 1 s, 2 s, 4 s, 4 s ...
    expect(gaps.slice(0, 4)).to.deep.equal([1000, 2000, 4000, 4000]);
    await s.stop();
    const runs = s.runs;
    clock.advance(60_000);
    await settle();
    expect(s.runs).to.equal(runs);
    expect(clock.pending).to.equal(0);
  });
});
