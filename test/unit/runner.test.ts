import { expect } from 'chai';
import type { ClaimDemand, ClaimedJob, ClaimResult } from '../../src/runner/claim.js';
import { Claimer } from '../../src/runner/claimer.js';
import { QueueRunner } from '../../src/runner/queue-runner.js';
import type { RunningJob } from '../../src/runner/running-job.js';
import { silentLogger } from '../../src/observe/logger.js';
import { FakeClock } from '../support/clock.js';
import { waitFor } from '../support/db.js';

let nextId = 1;
function job(queue: string, dueMs = 0): ClaimedJob {
  const id = String(nextId++);
  return { id, queue, task: 't', payload: {}, priority: 0, runAt: new Date(), attempt: 1, maxAttempts: 25, token: id, jobKey: null, createdAt: new Date(), dueMs };
}

/** Queues in memory, and a claim function over them that records every call. */
function store() {
  const queues = new Map<string, ClaimedJob[]>();
  const calls: ClaimDemand[][] = [];
  return {
    calls,
    add(queue: string, n: number, dueMs = 0) {
      const q = queues.get(queue) ?? [];
      for (let i = 0; i < n; i++) q.push(job(queue, dueMs));
      queues.set(queue, q);
    },
    async claim(demands: ClaimDemand[]): Promise<ClaimResult> {
      calls.push(demands);
      await new Promise((r) => setImmediate(r));
      return claimed(demands.flatMap((d) => (queues.get(d.queue) ?? []).splice(0, d.limit)));
    },
  };
}

const turn = () => new Promise((r) => setImmediate(r));

function claimed(jobs: ClaimedJob[], heldBack = new Map<string, number | null>()): ClaimResult {
  return { jobs, heldBack };
}

function runner(
  claimer: Claimer,
  queue: string,
  concurrency: number,
  execute: (r: RunningJob) => Promise<unknown>,
  opts: { clock?: FakeClock; written?: () => Promise<void>; claimWindowMs?: number; jobsBeforeWindow?: () => Promise<boolean>; prefetch?: number } = {},
) {
  return new QueueRunner({
    queue,
    concurrency,
    claimer,
    execute: async (r) => {
      await execute(r);
      return { written: opts.written?.() ?? Promise.resolve() };
    },
    backlog: () => 0,
    maxBacklog: concurrency,
    heldRetryMs: 250,
    claimWindowMs: opts.claimWindowMs,
    jobsBeforeWindow: opts.jobsBeforeWindow,
    prefetch: opts.prefetch,
    log: silentLogger(),
    clock: opts.clock,
  });
}

describe('queue runner and claimer', () => {
  it('claims exactly the free slots, runs N at once, and never buffers in mergeMap', async () => {
    const s = store();
    s.add('a', 1000);
    const claimer = new Claimer({ claim: (d) => s.claim(d), log: silentLogger() });
    let active = 0;
    let peak = 0;
    let done = 0;
    let maxBuffered = 0;
    const r = runner(claimer, 'a', 8, async () => {
      active++;
      peak = Math.max(peak, active);
      await turn();
      active--;
      done++;
    });
    // sampled between turns of the event loop, as a metrics scrape or a timer would see it
    const sample = setInterval(() => (maxBuffered = Math.max(maxBuffered, r.buffered)), 0);
    r.start();
    await waitFor('1,000 jobs to run', () => done === 1000, 10_000, 1);
    clearInterval(sample);
    expect(peak).to.equal(8);
    expect(maxBuffered).to.equal(0);
    expect(Math.max(...s.calls.map((c) => c[0]!.limit))).to.equal(8);
    // slots that free in the same turn are claimed together: far fewer claims than jobs
    expect(s.calls.length).to.be.below(1000 / 4);
  });

  it('coalesces any number of wake-ups during a claim into one more claim', async () => {
    const s = store();
    let release!: () => void;
    const claimer = new Claimer({
      claim: async (d) => {
        s.calls.push(d);
        if (s.calls.length === 1) await new Promise<void>((r) => (release = r));
        return claimed([]);
      },
      log: silentLogger(),
    });
    const r = runner(claimer, 'a', 4, async () => undefined);
    r.start();
    for (let i = 0; i < 10_000; i++) r.wake();
    release();
    await waitFor('the follow-up claim', () => s.calls.length === 2, 5000, 1);
    for (let i = 0; i < 10; i++) await turn();
    expect(s.calls.length).to.equal(2);
  });

  it("serves several queues' free slots with one statement", async () => {
    const s = store();
    s.add('a', 10);
    s.add('b', 10);
    let release!: () => void;
    const blocked = new Promise<void>((r) => (release = r));
    const claimer = new Claimer({
      claim: async (d) => {
        if (s.calls.length === 0) await blocked;
        return s.claim(d);
      },
      log: silentLogger(),
    });
    const a = runner(claimer, 'a', 3, async () => undefined);
    const b = runner(claimer, 'b', 5, async () => undefined);
    a.start();
    b.start();
    release();
    await waitFor('both queues worked off', () => s.calls.length >= 3 && a.inFlight === 0 && b.inFlight === 0, 5000, 1);
    // a's start claimed alone; b woke during that claim, and from then on one statement served both
    expect(s.calls[0]).to.deep.equal([{ queue: 'a', limit: 3 }]);
    expect(s.calls[1]).to.deep.equal([
      { queue: 'a', limit: 3 },
      { queue: 'b', limit: 5 },
    ]);
  });

  it('asks for the next claim as soon as the jobs held ahead are down to half, however many jobs run before the next turn', async () => {
    const s = store();
    s.add('a', 1000);
    // freed slots ask for a claim on the next turn; here that turn comes only once (for the claim
    // that follows the first, taken from a queue not yet known to be busy), and never again by
    // itself, as when hundreds of short jobs run before it does
    let started = 0;
    const startedAtClaim: number[] = [];
    let turns = 0;
    const claimer = new Claimer({
      claim: (d) => {
        startedAtClaim.push(started);
        return s.claim(d);
      },
      log: silentLogger(),
      nextTurn: (fn) => {
        if (turns++ === 0) setImmediate(fn);
      },
    });
    const r = runner(claimer, 'a', 10, async () => {
      started++;
    }, { prefetch: 100 });
    r.start();
    await waitFor('all jobs to run', () => started === 1000, 5000, 1);
    const limits = s.calls.map((d) => d[0]!.limit);
    // 10 for the slots alone, then 110 for the slots and the jobs ahead; then each claim asked with
    // at most 50 held ahead (a limit of 50 or more), never after they ran out (which asks for 110 again)
    expect(limits.slice(0, 2)).to.deep.equal([10, 110]);
    expect(limits.length).to.be.greaterThan(10);
    expect(limits.slice(2).filter((l) => l < 50 || l >= 110)).to.deep.equal([]);
    expect(startedAtClaim[2], 'the third claim went out with 50 held, 10 in the slots and the first claim\'s 10 run').to.equal(70);
    r.close();
  });

  it('with prefetch, a claim from a queue found empty asks for the free slots alone, and the jobs ahead follow', async () => {
    const s = store();
    const claimer = new Claimer({ claim: (d) => s.claim(d), log: silentLogger() });
    let started = 0;
    const release: (() => void)[] = [];
    const r = runner(claimer, 'a', 4, async () => {
      started++;
      await new Promise<void>((res) => release.push(res));
    }, { prefetch: 20 });
    r.start();
    await waitFor('the first claim to find the queue empty', () => s.calls.length === 1, 5000, 1);
    for (let i = 0; i < 5; i++) await turn();
    s.add('a', 100);
    r.wake();
    await waitFor('the slots to fill and 20 to be held', () => started === 4 && r.prefetched.length === 20, 5000, 1);
    // the first jobs waited for a claim of 4, not of 24; the jobs ahead came in the next one
    expect(s.calls.map((d) => d[0]!.limit)).to.deep.equal([4, 4, 20]);
    for (const f of release.splice(0)) f();
    r.close();
  });

  it('does not claim a queue found empty again until something wakes it', async () => {
    const s = store();
    const claimer = new Claimer({ claim: (d) => s.claim(d), log: silentLogger() });
    let done = 0;
    const r = runner(claimer, 'a', 2, async () => {
      done++;
    });
    s.add('a', 1);
    r.start();
    await waitFor('the job to run', () => done === 1, 5000, 1);
    for (let i = 0; i < 10; i++) await turn();
    const calls = s.calls.length;
    s.add('a', 1);
    for (let i = 0; i < 10; i++) await turn();
    expect(s.calls.length, 'no claim without a wake-up').to.equal(calls);
    r.wake();
    await waitFor('the second job to run', () => done === 2, 5000, 1);
  });

  describe('claim window', () => {
    /** The window of each claim made so far for queue a: undefined for a full claim. */
    const windows = (s: ReturnType<typeof store>) => s.calls.map((c) => c.find((d) => d.queue === 'a')!.windowMs);
    /** One more claim, asked for as `how` asks; its window. */
    const next = async (s: ReturnType<typeof store>, how: () => void) => {
      const n = s.calls.length;
      how();
      await waitFor('a claim', () => s.calls.length === n + 1, 5000, 1);
      return windows(s)[n];
    };

    it('after a whole-queue claim that found only recent jobs, claims have the window until a job before it is found waiting', async () => {
      const clock = new FakeClock();
      const s = store();
      const claimer = new Claimer({ claim: (d) => s.claim(d), log: silentLogger(), clock });
      let done = 0;
      let looks = 0;
      let before = false;
      const jobsBeforeWindow = async () => {
        looks++;
        return before;
      };
      const r = runner(claimer, 'a', 2, async () => void done++, { clock, claimWindowMs: 1000, jobsBeforeWindow });
      s.add('a', 3, 499);
      r.start();
      await waitFor('the backlog to run', () => done === 3, 5000, 1);
      // the whole queue, came back full of jobs due for less than half a window: the window then
      expect(windows(s)).to.deep.equal([undefined, 1000]);
      const look = () => r.lookAgain();
      expect(await next(s, look)).to.equal(1000);
      // a notification or the poll: about a job that has just become visible
      expect(await next(s, () => r.wake()), 'woken').to.equal(1000);
      expect(looks, 'before a window has passed').to.equal(0);
      clock.advance(1000);
      await waitFor('a look for jobs before the window', () => looks === 1, 5000, 1);
      expect(s.calls.length, 'none waits: no claim').to.equal(4);
      before = true;
      const n = s.calls.length;
      clock.advance(1000);
      await waitFor('the whole-queue claim a job before the window asks for', () => s.calls.length === n + 1, 5000, 1);
      expect(looks).to.equal(2);
      expect(windows(s)[n], 'a job waits before the window').to.equal(undefined);
      before = false;
      expect(await next(s, look)).to.equal(1000);
      // a reconnect, or the queue's settings changed: the jobs may be old
      expect(await next(s, () => r.wake(true)), 'woken for the whole queue').to.equal(undefined);
      expect(await next(s, look)).to.equal(1000);
      r.close();
    });

    it('a whole-queue claim that came back full with a job due for half a window: the whole queue again, until caught up', async () => {
      const s = store();
      const claimer = new Claimer({ claim: (d) => s.claim(d), log: silentLogger() });
      let done = 0;
      const r = runner(claimer, 'a', 2, async () => void done++, { claimWindowMs: 1000 });
      s.add('a', 3, 500);
      r.start();
      await waitFor('the backlog to run', () => done === 3, 5000, 1);
      // full of old jobs, then 1 of 2: caught up
      expect(windows(s)).to.deep.equal([undefined, undefined]);
      expect(await next(s, () => r.lookAgain())).to.equal(1000);
      r.close();
    });

    it('a whole-queue wake-up during a whole-queue claim makes the next claim whole too', async () => {
      const s = store();
      const claimer = new Claimer({ claim: (d) => s.claim(d), log: silentLogger() });
      const r = runner(claimer, 'a', 2, async () => undefined, { claimWindowMs: 60_000 });
      r.start();
      // the first claim is under way (its snapshot may predate the job the wake-up is about)
      r.wake(true);
      await waitFor('the claim the wake-up asked for', () => s.calls.length === 2, 5000, 1);
      expect(windows(s)).to.deep.equal([undefined, undefined]);
      expect(await next(s, () => r.lookAgain())).to.equal(60_000);
      r.close();
    });

    it('every claim is full with claimWindowMs 0', async () => {
      const s = store();
      const claimer = new Claimer({ claim: (d) => s.claim(d), log: silentLogger() });
      const r = runner(claimer, 'a', 2, async () => undefined, { claimWindowMs: 0 });
      r.start();
      await waitFor('a claim', () => s.calls.length === 1, 5000, 1);
      for (let i = 0; i < 3; i++) {
        await turn();
        expect(await next(s, () => r.lookAgain())).to.equal(undefined);
      }
      expect(windows(s)).to.have.length(4);
      r.close();
    });
  });

  it('retries a failed claim after a back-off on its clock, not at once', async () => {
    const clock = new FakeClock();
    let calls = 0;
    const claimer = new Claimer({
      claim: async () => {
        calls++;
        if (calls === 1) throw new Error('connection refused');
        return claimed([]);
      },
      log: silentLogger(),
      clock,
    });
    const r = runner(claimer, 'a', 2, async () => undefined);
    r.start();
    await waitFor('the first claim', () => calls === 1, 5000, 1);
    for (let i = 0; i < 10; i++) await turn();
    r.wake();
    await turn();
    expect(calls, 'wake-ups wait for the retry').to.equal(1);
    expect(clock.pending).to.equal(1);
    clock.advance(10_000);
    await waitFor('the retry', () => calls === 2, 5000, 1);
  });

  it('stops claiming when told, and tells when it is idle', async () => {
    const s = store();
    s.add('a', 3);
    const claimer = new Claimer({ claim: (d) => s.claim(d), log: silentLogger() });
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const r = runner(claimer, 'a', 3, () => gate);
    r.start();
    await waitFor('three jobs running', () => r.inFlight === 3, 5000, 1);
    r.stopClaiming();
    s.add('a', 5);
    r.wake();
    let idle = false;
    void r.whenIdle().then(() => (idle = true));
    open();
    await waitFor('idle', () => idle, 5000, 1);
    expect(r.inFlight).to.equal(0);
    for (let i = 0; i < 10; i++) await turn();
    expect(r.inFlight, 'nothing claimed after stopClaiming').to.equal(0);
  });

  describe('held back by a queue limit', () => {
    it('a concurrency limit: no claim until an outcome is written or heldRetryMs passes, however often it is woken', async () => {
      const clock = new FakeClock();
      let full = true;
      const calls: number[] = [];
      let write!: () => void;
      const claimer = new Claimer({
        claim: async (d) => {
          calls.push(d[0]!.limit);
          await turn();
          if (full) return claimed([], new Map([['a', null]]));
          return claimed(calls.length === 2 ? [job('a')] : []);
        },
        log: silentLogger(),
        clock,
      });
      let ran = 0;
      const r = runner(claimer, 'a', 3, async () => void ran++, { clock, written: () => new Promise<void>((res) => (write = res)) });
      r.start();
      await waitFor('the first claim', () => calls.length === 1, 5000, 1);
      for (let i = 0; i < 100; i++) r.wake();
      for (let i = 0; i < 10; i++) await turn();
      clock.advance(249);
      await turn();
      expect(calls.length, 'held: wake-ups do not claim').to.equal(1);
      full = false;
      clock.advance(1);
      await waitFor('the retry after heldRetryMs', () => calls.length === 2, 5000, 1);
      await waitFor('the claimed job to run and its slot to free', () => ran === 1 && r.inFlight === 0, 5000, 1);
      // held again; the job's outcome being written frees a place under the limit: ask at once
      full = true;
      r.wake();
      await waitFor('held again', () => calls.length === 3, 5000, 1);
      for (let i = 0; i < 10; i++) await turn();
      expect(calls.length).to.equal(3);
      full = false;
      write();
      await waitFor('the claim after the outcome was written', () => calls.length === 4, 5000, 1);
    });

    it('a rate limit: the next claim when the window frees a start, not before, and not on a job ending', async () => {
      const clock = new FakeClock();
      const calls: number[] = [];
      const claimer = new Claimer({
        claim: async () => {
          calls.push(clock.now());
          await turn();
          return calls.length === 1 ? claimed([job('a')], new Map([['a', 700]])) : claimed([]);
        },
        log: silentLogger(),
        clock,
      });
      const r = runner(claimer, 'a', 3, async () => undefined, { clock });
      const start = clock.now();
      r.start();
      await waitFor('the job to run', () => calls.length === 1 && r.inFlight === 0, 5000, 1);
      for (let i = 0; i < 10; i++) await turn();
      expect(calls.length, 'its end does not claim').to.equal(1);
      clock.advance(699);
      await turn();
      expect(calls.length).to.equal(1);
      clock.advance(1);
      await waitFor('the claim when the window frees', () => calls.length === 2, 5000, 1);
      expect(calls[1]! - start).to.equal(700);
    });
  });
});
