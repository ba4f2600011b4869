// The notify scenario (--notify), sluice only, on a server with fsync on: what sluice's
// notifications cost producers, and how fast an idle worker hears of new jobs.
//  (a) throughput: N connections each running `SELECT sluice.add_job('noop')` back to back, with
//      sluice's triggers enabled and then disabled (the triggers are what notifies), while a
//      sluice worker works the jobs off, and while a runner waits without ever being woken (it
//      holds the wake lock throughout: every insert notifies, as every insert did before version 12);
//  (b) pickup under load: an idle worker while many producers add single jobs at a steady rate,
//      for sluice and, in the same load, for graphile-worker: with fsync on, both wait for the
//      producer's commit flush and then their own claim's, which sets the floor on this disk;
//  (c) delayed commit: a job inserted in a transaction that commits 2 s later.
// PostgreSQL serialises the commits of all transactions that NOTIFY, and that costs something only
// when commits wait for real WAL flushes, hence the server settings.
import { log, rotate, runChild, type ScenarioEnv } from './orchestrator.js';
import { behindSchedule, check, fmt, markdownTable, max, median, renderTargets, spread } from './measure.js';
import type { DelayedResult, LoadResult, Spread, TpsConsumer, TpsResult } from './protocol.js';
import type { VariantId, VariantInfo } from './systems/types.js';

export interface NotifyOptions {
  rounds: number;
  /** Length of each throughput run and of each pickup run. */
  seconds: number;
  /** Producer connections of the throughput runs; the pickup run uses the largest. */
  clients: number[];
  /** Combined jobs/s of the pickup run's producers. */
  rate: number;
  /** Worker concurrency of the pickup and delayed-commit runs. */
  concurrency: number;
  delayedCommits: number;
  holdMs: number;
}

type Triggers = 'enabled' | 'disabled';
const CONSUMERS: TpsConsumer[] = ['worker', 'waiting-runner'];
/** worker.pollMs of the triggers-off runs' worker. */
const POLLING_WORKER_MS = 5;

export interface NotifyRuns {
  throughput: { round: number; clients: number; consumer: TpsConsumer; triggers: Triggers; result: TpsResult }[];
  pickup: { round: number; variant: VariantId; label: string; result: LoadResult }[];
  delayed: { round: number; result: DelayedResult }[];
}

export const noNotifyRuns = (): NotifyRuns => ({ throughput: [], pickup: [], delayed: [] });

/**
 * Interleaved rounds of (a), (b) and (c); each run is added to `runs` as it finishes. `compared`:
 * the other systems' variants whose pickup (b) is measured in the same load.
 */
export async function runNotify(env: ScenarioEnv, opts: NotifyOptions, compared: VariantInfo[], runs: NotifyRuns): Promise<void> {
  const sluice = await import('./systems/sluice.js');
  const url = env.url('sluice');
  const db = env.admin('sluice');
  const producers = Math.max(...opts.clients);
  for (let round = 0; round < opts.rounds; round++) {
    log(`notify round ${round + 1}/${opts.rounds}`);
    for (const clients of opts.clients) {
      for (const consumer of CONSUMERS) for (const triggers of rotate<Triggers>(['enabled', 'disabled'], round)) {
        await env.reset('sluice');
        await sluice.setTriggers(db, triggers === 'enabled');
        let result: TpsResult;
        try {
          result = await runChild<TpsResult>({
            mode: 'tps',
            system: 'sluice',
            url,
            sql: sluice.ADD_ONE_SQL,
            clients,
            seconds: opts.seconds,
            listenChannel: sluice.NOTIFY_CHANNEL,
            consumer,
            concurrency: opts.concurrency,
            // with the triggers off the worker hears nothing: it polls at about the rhythm at which
            // the notified one claims under load, so both arms work the jobs off as they come
            pollMs: triggers === 'disabled' ? POLLING_WORKER_MS : undefined,
            waitSql: sluice.WAIT_FOR_DEFAULT_SQL,
          });
        } finally {
          await sluice.setTriggers(db, true);
        }
        // each client ran the statement once more before the timing began
        const rows = await env.adapter('sluice').total(db);
        if (rows !== result.transactions + clients) {
          throw new Error(`expected ${result.transactions + clients} jobs after the throughput run, found ${rows}`);
        }
        runs.throughput.push({ round, clients, consumer, triggers, result });
        log(
          `  tps       ${`${clients} clients, ${consumer}, triggers ${triggers}`.padEnd(46)} ${fmt(result.tps).padStart(8)} tx/s  ` +
            `p50 ${fmt(result.latencyP50Ms, 1)} ms, p99 ${fmt(result.latencyP99Ms, 1)} ms, ` +
            `${fmt(result.notifications / result.transactions, 2)} notifications per job`,
        );
      }
    }

    const pickupVariants: { id: VariantId; system: VariantInfo['system']; label: string }[] = [
      { id: 'sluice', system: 'sluice', label: 'sluice' },
      ...compared,
    ];
    for (const v of rotate(pickupVariants, round)) {
      await env.reset(v.system);
      const pickup = await runChild<LoadResult>({
        mode: 'load',
        system: v.system,
        variant: v.id,
        url: env.url(v.system),
        concurrency: opts.concurrency,
        producers,
        rate: opts.rate,
        phases: [{ name: 'steady', seconds: opts.seconds }],
        stallMs: env.stallMs,
      });
      runs.pickup.push({ round, variant: v.id, label: v.label, result: pickup });
      const p = pickup.phases[0]!;
      log(
        `  pickup    ${`${v.label}, ${producers} producers at ${fmt(opts.rate)}/s`.padEnd(46)} p50 ${fmt(p.pickupMs.p50, 1)} ms, ` +
          `p99 ${fmt(p.pickupMs.p99, 1)} ms, max ${fmt(p.pickupMs.max, 1)} ms after COMMIT sent ` +
          `(p99 ${fmt(p.pickupAfterCommitReturnedMs.p99, 1)} ms after it returned); ${fmt(p.committedPerSec)} committed/s` +
          (p.neverStarted ? `, ${p.neverStarted} NEVER PICKED UP` : ''),
      );
    }

    await env.reset('sluice');
    const delayed = await runChild<DelayedResult>({
      mode: 'delayed',
      system: 'sluice',
      variant: 'sluice',
      url,
      concurrency: opts.concurrency,
      commits: opts.delayedCommits,
      holdMs: opts.holdMs,
    });
    runs.delayed.push({ round, result: delayed });
    log(
      `  delayed   ${`${delayed.commits} commits, ${fmt(delayed.holdMs / 1000, 1)} s after insert`.padEnd(30)} ` +
        `max ${fmt(max(delayed.afterCommitSentMs), 1)} ms after COMMIT sent, ` +
        `${fmt(max(delayed.afterCommitReturnedMs), 1)} ms after it returned` +
        (delayed.missed ? `, ${delayed.missed} NOT PICKED UP within 10 s` : ''),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// summary

/** The issue's targets for this scenario (reported, not enforced). */
const TARGETS = { ratio: 0.8, pickupP99Ms: 5, pickupMaxMs: 50, delayedMaxMs: 50 };

export function notifySummary(runs: NotifyRuns, opts: NotifyOptions) {
  const tps = (clients: number, consumer: TpsConsumer, triggers: Triggers) =>
    runs.throughput.filter((r) => r.clients === clients && r.consumer === consumer && r.triggers === triggers);
  const throughput = CONSUMERS.flatMap((consumer) => opts.clients.map((clients) => {
    const on = tps(clients, consumer, 'enabled');
    const off = tps(clients, consumer, 'disabled');
    const enabled = median(on.map((r) => r.result.tps));
    const disabled = median(off.map((r) => r.result.tps));
    const roundRatios = on.flatMap((r) => {
      const other = off.find((o) => o.round === r.round);
      return other ? [r.result.tps / other.result.tps] : [];
    });
    return {
      clients,
      consumer,
      enabledTps: enabled,
      disabledTps: disabled,
      ratio: enabled !== null && disabled ? enabled / disabled : null,
      roundRatios,
      notificationsPerJob: median(on.map((r) => r.result.notifications / r.result.transactions)),
    };
  }));
  // per system, in the order first run: per round, then the median of the rounds' percentiles and the highest maximum
  const pickupOf = (variant: VariantId) => {
    const ofVariant = runs.pickup.filter((r) => r.variant === variant);
    const phases = ofVariant.map((r) => r.result.phases[0]!);
    const combine = (pick: (p: (typeof phases)[number]) => Spread): Spread => {
      const s = phases.map(pick);
      return {
        n: s.reduce((sum, x) => sum + x.n, 0),
        p50: median(s.map((x) => x.p50 ?? NaN)),
        p99: median(s.map((x) => x.p99 ?? NaN)),
        max: max(s.map((x) => x.max ?? NaN).filter(Number.isFinite)),
      };
    };
    return {
      variant,
      label: ofVariant[0]!.label,
      producers: Math.max(...opts.clients),
      offeredPerSec: opts.rate,
      committedPerSec: median(phases.map((p) => p.committedPerSec)),
      pickupMs: combine((p) => p.pickupMs),
      pickupAfterCommitReturnedMs: combine((p) => p.pickupAfterCommitReturnedMs),
      producerMs: combine((p) => p.producerMs),
      commitMs: combine((p) => p.commitMs),
      neverStarted: phases.reduce((sum, p) => sum + p.neverStarted, 0),
    };
  };
  const pickups = [...new Set(runs.pickup.map((r) => r.variant))].sort((x, y) => Number(y === 'sluice') - Number(x === 'sluice')).map(pickupOf);
  const pickup = pickups.find((p) => p.variant === 'sluice');
  // pooled over the rounds: the target is about the worst commit
  const afterSent = runs.delayed.flatMap((r) => r.result.afterCommitSentMs);
  const afterReturned = runs.delayed.flatMap((r) => r.result.afterCommitReturnedMs);
  const delayed = runs.delayed.length
    ? {
        commits: runs.delayed.reduce((sum, r) => sum + r.result.commits, 0),
        holdMs: opts.holdMs,
        afterCommitSentMs: spread(afterSent),
        afterCommitReturnedMs: spread(afterReturned),
        missed: runs.delayed.reduce((sum, r) => sum + r.result.missed, 0),
      }
    : null;
  const most = throughput.find((t) => t.consumer === 'worker' && t.clients === Math.max(...opts.clients));
  const targets = {
    [`enabled ÷ disabled at ${most?.clients} clients, a worker working, >= ${TARGETS.ratio}`]: check(most?.ratio, (x) => x >= TARGETS.ratio),
    [`pickup p99 <= ${TARGETS.pickupP99Ms} ms`]: check(pickup?.pickupMs.p99, (x) => x <= TARGETS.pickupP99Ms),
    [`pickup max <= ${TARGETS.pickupMaxMs} ms`]: check(pickup?.pickupMs.max, (x) => x <= TARGETS.pickupMaxMs),
    [`delayed commit, pickup max <= ${TARGETS.delayedMaxMs} ms`]: check(
      delayed?.missed ? Infinity : delayed?.afterCommitSentMs.max,
      (x) => x <= TARGETS.delayedMaxMs,
    ),
  };
  return { throughput, pickups, delayed, targets };
}

export function renderNotify(runs: NotifyRuns, opts: NotifyOptions): string {
  const s = notifySummary(runs, opts);
  const out: string[] = [];
  out.push(
    `notify scenario (sluice): ${opts.rounds} round(s); medians of the rounds. (a) each client runs \`SELECT sluice.add_job('noop')\` ` +
      `back to back for ${opts.seconds} s, one transaction each, with sluice's triggers enabled and disabled ` +
      '(`ALTER TABLE sluice.jobs DISABLE TRIGGER USER`); one more connection LISTENs throughout and counts the notifications. ' +
      `Consumer "worker": a sluice worker (concurrency ${opts.concurrency}) works the jobs off during the run; with the triggers ` +
      `off it hears nothing and polls every ${POLLING_WORKER_MS} ms (worker.pollMs), so that both runs work the jobs off as they come. ` +
      'Consumer "waiting-runner": no worker; the listening connection holds the queue\'s wake lock, as a runner waiting for work ' +
      'that is never woken: every insert notifies (the behaviour before schema version 12, the worst case now).',
  );
  out.push('');
  out.push(
    markdownTable(
      ['clients', 'consumer', 'triggers enabled, tx/s ↑', 'triggers disabled, tx/s ↑', 'enabled ÷ disabled', 'per round', 'notifications per job'],
      s.throughput.map((t) => [
        String(t.clients),
        t.consumer,
        fmt(t.enabledTps),
        fmt(t.disabledTps),
        t.ratio === null ? '–' : `${fmt(t.ratio, 2)}×`,
        t.roundRatios.map((x) => fmt(x, 2)).join(', ') || '–',
        fmt(t.notificationsPerJob, 2),
      ]),
    ),
  );
  if (s.pickups.length) {
    out.push('');
    out.push(
      `(b) pickup by an idle worker (concurrency ${opts.concurrency}) while ${s.pickups[0]!.producers} producers add one job per transaction ` +
        `at ${fmt(opts.rate)} jobs/s combined for ${opts.seconds} s; each system in a run of its own, the same load. Pickup is the ` +
        'handler\'s start minus the moment COMMIT was sent (same process, same clock); with fsync on that includes the commit\'s ' +
        'WAL flush, so the moment COMMIT returned is shown as well. A job is visible only once its commit is: the COMMIT round trip ' +
        '(sent to returned) is about the floor of a pickup from COMMIT sent, for any system. Producer: BEGIN to COMMIT returned. ' +
        'Percentiles: medians of the rounds; max: the highest.',
    );
    out.push('');
    out.push(
      markdownTable(
        ['system', 'offered jobs/s', 'committed jobs/s', 'pickup p50, ms', 'pickup p99, ms', 'pickup max, ms', 'p99 after COMMIT returned, ms', 'max after COMMIT returned, ms', 'COMMIT p99, ms', 'producer p99, ms'],
        s.pickups.map((p) => [
          p.label,
          fmt(p.offeredPerSec),
          fmt(p.committedPerSec),
          fmt(p.pickupMs.p50, 1),
          fmt(p.pickupMs.p99, 1),
          fmt(p.pickupMs.max, 1),
          fmt(p.pickupAfterCommitReturnedMs.p99, 1),
          fmt(p.pickupAfterCommitReturnedMs.max, 1),
          fmt(p.commitMs.p99, 1),
          fmt(p.producerMs.p99, 1),
        ]),
      ),
    );
    for (const p of s.pickups) if (p.neverStarted) out.push(`${p.label}: ${p.neverStarted} job(s) were never picked up.`);
    const behind = runs.pickup.flatMap((r) => {
      const b = behindSchedule(r.result.phases);
      return b ? [`${r.label}: ${b}`] : [];
    });
    if (behind.length) out.push(`note: ${behind.join('; ')}.`);
  }
  if (s.delayed) {
    const d = s.delayed;
    out.push('');
    out.push(`(c) delayed commit: one job inserted, COMMIT ${fmt(d.holdMs / 1000, 1)} s later, into an idle worker; all rounds pooled.`);
    out.push('');
    out.push(
      markdownTable(
        ['commits', 'after COMMIT sent p50, ms', 'after COMMIT sent max, ms', 'after COMMIT returned max, ms', 'not picked up in 10 s'],
        [
          [
            String(d.commits),
            fmt(d.afterCommitSentMs.p50, 1),
            fmt(d.afterCommitSentMs.max, 1),
            fmt(d.afterCommitReturnedMs.max, 1),
            String(d.missed),
          ],
        ],
      ),
    );
  }
  out.push('');
  out.push(`targets (for information): ${renderTargets(s.targets)}`);
  const sluice = s.pickups.find((p) => p.variant === 'sluice');
  if (sluice) {
    out.push(
      `the producers' own COMMIT took up to ${fmt(sluice.commitMs.p99, 1)} ms at p99 in sluice's pickup run: a pickup p99 from COMMIT ` +
        `sent below that is out of reach for any system on this server and disk.`,
    );
  }
  return out.join('\n');
}
