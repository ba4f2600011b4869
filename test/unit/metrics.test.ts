import { expect } from 'chai';
import { Events, type JobRef } from '../../src/observe/events.js';
import { Metrics } from '../../src/observe/metrics.js';

const job = (task: string, queue = 'default'): JobRef => ({ id: '1', queue, task, attempt: 1, runAt: new Date() });

/** The sample lines of one metric family in the Prometheus text, labels sorted, without HELP and TYPE. */
async function samples(metrics: Metrics, name: string): Promise<string[]> {
  const text = await metrics.registry.getSingleMetricAsString(name);
  return text
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.replace(/\{([^}]*)\}/, (_, inner: string) => `{${inner.split(',').sort().join(',')}}`))
    .sort();
}

describe('metrics of the job path', () => {
  let events: Events;
  let metrics: Metrics;

  beforeEach(() => {
    events = new Events();
    metrics = new Metrics();
    metrics.observe(events);
  });

  it('counts started and finished jobs per queue and task', async () => {
    for (let i = 0; i < 3; i++) events.emit({ type: 'job.started', job: job('mail'), lagMs: 2 });
    events.emit({ type: 'job.started', job: job('mail', 'bulk'), lagMs: 2 });
    events.emit({ type: 'job.completed', job: job('mail'), seconds: 0.002, inTransaction: false });
    events.emit({ type: 'job.completed', job: job('mail'), seconds: 0.003, inTransaction: true });
    events.emit({ type: 'job.failed', job: job('mail'), seconds: 0.1, error: 'x', permanent: true });
    events.emit({ type: 'job.retried', job: job('mail'), seconds: 0.1, error: 'x', retryInMs: 10 });
    events.emit({ type: 'job.snoozed', job: job('mail'), seconds: 0.1, delayMs: 10 });
    events.emit({ type: 'job.aborted', job: job('mail'), cause: 'cancelled' });
    events.emit({ type: 'job.aborted', job: job('mail'), cause: 'shutdown' });
    events.emit({ type: 'job.fenced', job: job('mail'), outcome: 'completed' });

    expect(await samples(metrics, 'sluice_jobs_started_total')).to.deep.equal([
      'sluice_jobs_started_total{queue="bulk",task="mail"} 1',
      'sluice_jobs_started_total{queue="default",task="mail"} 3',
    ]);
    expect(await samples(metrics, 'sluice_jobs_completed_total')).to.include('sluice_jobs_completed_total{queue="default",task="mail"} 2');
    expect(await samples(metrics, 'sluice_jobs_failed_total')).to.include('sluice_jobs_failed_total{queue="default",task="mail"} 1');
    expect(await samples(metrics, 'sluice_jobs_retried_total')).to.include('sluice_jobs_retried_total{queue="default",task="mail"} 1');
    expect(await samples(metrics, 'sluice_jobs_snoozed_total')).to.include('sluice_jobs_snoozed_total{queue="default",task="mail"} 1');
    expect(await samples(metrics, 'sluice_jobs_cancelled_total'), 'only cancellations count, not shutdown').to.include(
      'sluice_jobs_cancelled_total{queue="default",task="mail"} 1',
    );
    expect(await samples(metrics, 'sluice_outcomes_fenced_total')).to.include('sluice_outcomes_fenced_total{queue="default",task="mail"} 1');
  });

  it('keeps counting between scrapes, never resetting', async () => {
    events.emit({ type: 'job.started', job: job('mail'), lagMs: 0 });
    expect(await samples(metrics, 'sluice_jobs_started_total')).to.deep.equal(['sluice_jobs_started_total{queue="default",task="mail"} 1']);
    events.emit({ type: 'job.started', job: job('mail'), lagMs: 0 });
    expect(await samples(metrics, 'sluice_jobs_started_total')).to.deep.equal(['sluice_jobs_started_total{queue="default",task="mail"} 2']);
  });

  it('puts run times and lags in cumulative buckets, with their sum and count', async () => {
    for (const seconds of [0.0005, 0.004, 0.004, 2, 400]) events.emit({ type: 'job.completed', job: job('mail'), seconds, inTransaction: false });
    events.emit({ type: 'job.failed', job: job('mail'), seconds: 0.02, error: 'x', permanent: false });
    const duration = await samples(metrics, 'sluice_job_duration_seconds');
    const bucket = (le: string) => duration.find((l) => l.startsWith(`sluice_job_duration_seconds_bucket{le="${le}",`))?.split(' ')[1];
    expect([bucket('0.001'), bucket('0.005'), bucket('0.01'), bucket('0.05'), bucket('1'), bucket('5'), bucket('300'), bucket('+Inf')]).to.deep.equal(
      ['1', '3', '3', '4', '4', '5', '5', '6'],
    );
    expect(duration).to.include('sluice_job_duration_seconds_count{queue="default",task="mail"} 6');
    const sum = Number(duration.find((l) => l.startsWith('sluice_job_duration_seconds_sum'))!.split(' ')[1]);
    expect(sum).to.be.closeTo(0.0005 + 0.008 + 2 + 400 + 0.02, 1e-9);

    events.emit({ type: 'job.started', job: job('mail'), lagMs: 30 });
    events.emit({ type: 'job.started', job: job('sms'), lagMs: -5 });
    const lag = await samples(metrics, 'sluice_job_lag_seconds');
    expect(lag).to.include('sluice_job_lag_seconds_bucket{le="0.001",queue="default"} 1');
    expect(lag).to.include('sluice_job_lag_seconds_bucket{le="0.05",queue="default"} 2');
    expect(lag, 'one lag series per queue, whatever the task').to.include('sluice_job_lag_seconds_count{queue="default"} 2');
    expect(lag.filter((l) => l.startsWith('sluice_job_lag_seconds_count'))).to.have.length(1);
    expect(lag).to.include('sluice_job_lag_seconds_sum{queue="default"} 0.03');
  });

  it('reports the same series as JSON (for the dashboard and tests)', async () => {
    events.emit({ type: 'job.completed', job: job('mail'), seconds: 0.002, inTransaction: false });
    const json = await metrics.registry.getMetricsAsJSON();
    const completed = json.find((m) => m.name === 'sluice_jobs_completed_total')!;
    expect(completed.type).to.equal('counter');
    expect(completed.values).to.deep.equal([{ labels: { queue: 'default', task: 'mail' }, value: 1 }]);
    const duration = json.find((m) => m.name === 'sluice_job_duration_seconds')!;
    expect(duration.type).to.equal('histogram');
    const count = duration.values.find((v) => (v as { metricName?: string }).metricName === 'sluice_job_duration_seconds_count');
    expect(count?.value).to.equal(1);
    expect(count?.labels).to.deep.equal({ queue: 'default', task: 'mail' });
  });
});
