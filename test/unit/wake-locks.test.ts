import { expect } from 'chai';
import { silentLogger } from '../../src/observe/logger.js';
import { WakeLocks, type ListenerSession, type WakeLockState } from '../../src/notify/wake-locks.js';
import { FakeClock } from '../support/clock.js';

const turn = () => new Promise((r) => setImmediate(r));

/** WakeLocks over a scripted lock: each take answers the next state given, and every call is recorded. */
function harness() {
  const clock = new FakeClock();
  const calls: string[] = [];
  const answers: WakeLockState[] = [];
  let session: ListenerSession | undefined = { id: 1, db: { query: (() => undefined) as never } };
  const locks = new WakeLocks({
    session: () => session,
    take: async (_db, queue) => {
      calls.push(`take ${queue} @${session?.id}`);
      await turn();
      return answers.shift() ?? 'held';
    },
    release: async (_db, queue) => {
      calls.push(`release ${queue} @${session?.id}`);
      await turn();
    },
    lookAgain: (queue) => calls.push(`look ${queue}`),
    log: silentLogger(),
    clock,
  });
  return {
    clock,
    calls,
    answers,
    locks,
    setSession: (s: ListenerSession | undefined) => (session = s),
  };
}

describe('wake locks', () => {
  it('a waiting runner takes the lock and claims once more; woken, it gives the lock back', async () => {
    const h = harness();
    h.locks.waiting('q');
    await turn();
    await turn();
    expect(h.calls).to.deep.equal(['take q @1', 'look q']);
    expect(h.locks.holds('q')).to.equal(true);
    // the claim once more came back short: still waiting, nothing more to do
    h.locks.waiting('q');
    h.locks.looking('q');
    await turn();
    await turn();
    expect(h.calls).to.deep.equal(['take q @1', 'look q', 'release q @1']);
    expect(h.locks.holds('q')).to.equal(false);
  });

  it('while producers hold it: claims again at once, then after a delay that grows with how long its claims found nothing, then takes it', async () => {
    const h = harness();
    h.answers.push('producers', 'producers', 'producers', 'producers', 'held');
    h.locks.waiting('q');
    await turn();
    await turn();
    expect(h.calls, 'the first producers met: their jobs may be committed already').to.deep.equal(['take q @1', 'look q']);
    expect(h.clock.delays).to.deep.equal([]);
    // that claim came back empty
    h.locks.waiting('q');
    await turn();
    await turn();
    expect(h.clock.delays.at(-1), 'the shortest delay').to.equal(1);
    h.clock.advance(1);
    expect(h.calls.at(-1)).to.equal('look q');
    // empty again, 6.4 s after the producers were first met
    h.clock.advance(6399);
    h.locks.waiting('q');
    await turn();
    await turn();
    expect(h.clock.delays.at(-1)).to.equal(100);
    h.clock.advance(100);
    h.clock.advance(60_000);
    h.locks.waiting('q');
    await turn();
    await turn();
    expect(h.clock.delays.at(-1), 'capped').to.equal(1000);
    h.clock.advance(1000);
    h.locks.waiting('q');
    await turn();
    await turn();
    expect(h.calls.filter((c) => c.startsWith('take'))).to.have.length(5);
    expect(h.calls.at(-1), 'taken at last: one more claim').to.equal('look q');
    expect(h.locks.holds('q')).to.equal(true);
  });

  it('while producers hold it and its claims keep finding jobs: claims again at once, with no timer', async () => {
    const h = harness();
    h.answers.push('producers', 'producers', 'producers', 'producers');
    h.locks.waiting('q');
    await turn();
    await turn();
    h.locks.waiting('q');
    await turn();
    await turn();
    h.clock.advance(6400);
    h.locks.waiting('q');
    await turn();
    await turn();
    expect(h.clock.delays.at(-1), 'found nothing for 6.4 s').to.equal(100);
    h.clock.advance(100);
    const looks = h.calls.filter((c) => c === 'look q').length;
    h.locks.waiting('q', true);
    await turn();
    await turn();
    expect(h.calls.filter((c) => c === 'look q').length, 'the claim found jobs: the next one at once').to.equal(looks + 1);
    expect(h.clock.delays, 'no new timer').to.have.length(2);
  });

  it('while another worker holds it: tries the lock again, rarely, without claiming (producers notify meanwhile)', async () => {
    const h = harness();
    h.answers.push('worker', 'worker', 'held');
    h.locks.waiting('q');
    await turn();
    await turn();
    const first = h.clock.delays.at(-1)!;
    expect(first).to.be.within(25, 50);
    h.clock.advance(first);
    await turn();
    await turn();
    const second = h.clock.delays.at(-1)!;
    expect(second).to.be.within(50, 100);
    h.clock.advance(second);
    await turn();
    await turn();
    expect(h.calls).to.deep.equal(['take q @1', 'take q @1', 'take q @1', 'look q']);
  });

  it('woken while the take is under way: gives the lock back once it is had, and no claim follows', async () => {
    const h = harness();
    h.locks.waiting('q');
    h.locks.looking('q');
    await turn();
    await turn();
    await turn();
    expect(h.calls).to.deep.equal(['take q @1', 'release q @1']);
    expect(h.locks.holds('q')).to.equal(false);
  });

  it('woken while waiting out producers: the pending claim is dropped', async () => {
    const h = harness();
    h.answers.push('producers', 'producers');
    h.locks.waiting('q');
    await turn();
    await turn();
    // the claim at once came back empty: the next one waits for a timer
    h.locks.waiting('q');
    await turn();
    await turn();
    expect(h.clock.pending).to.equal(1);
    h.locks.looking('q');
    h.clock.advance(1000);
    expect(h.calls).to.deep.equal(['take q @1', 'look q', 'take q @1']);
    expect(h.clock.pending).to.equal(0);
  });

  it('a lock held on a connection that is gone counts as not held: taken again on the next one', async () => {
    const h = harness();
    h.locks.waiting('q');
    await turn();
    await turn();
    h.setSession(undefined);
    expect(h.locks.holds('q')).to.equal(false);
    // the reconnect wakes every runner; this one finds the queue empty again
    h.locks.looking('q');
    h.setSession({ id: 2, db: { query: (() => undefined) as never } });
    h.locks.waiting('q');
    await turn();
    await turn();
    expect(h.calls).to.deep.equal(['take q @1', 'look q', 'take q @2', 'look q']);
    expect(h.locks.holds('q')).to.equal(true);
  });
});
