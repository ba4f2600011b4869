import { expect } from 'chai';
import { DueTimes } from '../../src/notify/due-times.js';
import { MAX_TIMER_MS } from '../../src/util/time.js';
import { FakeClock } from '../support/clock.js';

describe('due times (delayed jobs)', () => {
  const setup = (capacity?: number) => {
    const clock = new FakeClock();
    let fired = 0;
    const due = new DueTimes(() => fired++, { clock, capacity });
    return { clock, due, fired: () => fired };
  };

  it('wakes at the run_at (plus the margin), then once more after the recheck', () => {
    const { clock, due, fired } = setup();
    due.add(new Date(clock.now() + 1000), 0);
    clock.advance(1004);
    expect(fired()).to.equal(0);
    clock.advance(1);
    expect(fired()).to.equal(1);
    clock.advance(50);
    expect(fired()).to.equal(2);
    clock.advance(10_000);
    expect(fired()).to.equal(2);
    expect(clock.pending).to.equal(0);
  });

  it('translates the database clock with the measured offset', () => {
    const { clock, due, fired } = setup();
    // the database runs 300 ms ahead: its run_at is 300 ms earlier in local time
    due.add(new Date(clock.now() + 1000), 300);
    clock.advance(705);
    expect(fired()).to.equal(1);
  });

  it('wakes at once for a time the estimate says has passed, and looks again shortly after', () => {
    const { clock, due, fired } = setup();
    due.add(new Date(clock.now() - 10), 0);
    expect(fired()).to.equal(1);
    clock.advance(50);
    expect(fired()).to.equal(2);
  });

  it('keeps one timer for the earliest time, and the earliest times when over capacity', () => {
    const { clock, due, fired } = setup(3);
    for (const s of [5, 1, 4, 2, 3]) due.add(new Date(clock.now() + s * 1000), 0);
    expect(due.size).to.equal(3);
    expect(clock.pending).to.equal(1);
    clock.advance(3_100);
    // 1 s, 2 s, 3 s and their rechecks; 4 s and 5 s were dropped (left to the poll)
    expect(fired()).to.equal(6);
    clock.advance(10_000);
    expect(fired()).to.equal(6);
  });

  it('never gives a timer more than it can take, and does not wake early for a far-future job', () => {
    const { clock, due, fired } = setup();
    const thirtyDays = 30 * 86_400_000;
    due.add(new Date(clock.now() + thirtyDays), 0);
    expect(Math.max(...clock.delays)).to.be.at.most(MAX_TIMER_MS);
    clock.advance(MAX_TIMER_MS);
    expect(fired(), 'no wake-up when the capped timer fires before the run_at').to.equal(0);
    expect(clock.pending, 'the timer is armed again for the rest').to.equal(1);
    clock.advance(thirtyDays - MAX_TIMER_MS + 5);
    expect(fired()).to.equal(1);
  });

  it('ignores a time it cannot represent', () => {
    const { clock, due, fired } = setup();
    due.add(new Date(Number.NaN), 0);
    expect(fired()).to.equal(0);
    expect(clock.pending).to.equal(0);
  });

  it('clear() drops every time and its timer', () => {
    const { clock, due, fired } = setup();
    due.add(new Date(clock.now() + 1000), 0);
    due.clear();
    clock.advance(5000);
    expect(fired()).to.equal(0);
    expect(due.size).to.equal(0);
  });
});
