// Counters and histograms for the metrics every job touches, kept as plain numbers per label set
// and read by prom-client's registry only at scrape. prom-client hashes and validates the labels
// on every inc and observe, even through a labelled child: on a busy worker that was about a fifth
// of the worker's busy time. The exposition is prom-client's own.
import type client from 'prom-client';

type Labels = Record<string, string>;
/** A sample's labels: a bucket's `le` is its bound as a number, as prom-client gives it. */
type SampleLabels = Record<string, string | number>;

interface Sample {
  labels: SampleLabels;
  value: number;
  metricName?: string;
}

interface MetricData {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  aggregator: 'sum';
  values: Sample[];
}

/** A metric family a prom-client registry can read: it reads only the names and get(). */
abstract class Tally<S> {
  protected readonly all: { labels: Labels; series: S }[] = [];

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: MetricData['type'],
    registry: client.Registry,
  ) {
    registry.registerMetric(this as unknown as client.Metric);
  }

  readonly aggregator = 'sum' as const;

  /** The series of one label set; keep it, each call makes a new one. */
  series(labels: Labels): S {
    const series = this.create();
    this.all.push({ labels, series });
    return series;
  }

  protected abstract create(): S;
  protected abstract samples(labels: Labels, series: S): Sample[];

  get(): Promise<MetricData> {
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values: this.all.flatMap(({ labels, series }) => this.samples(labels, series)),
    });
  }
}

export class CounterSeries {
  value = 0;
  inc(by = 1): void {
    this.value += by;
  }
}

export class TallyCounter extends Tally<CounterSeries> {
  constructor(name: string, help: string, registry: client.Registry) {
    super(name, help, 'counter', registry);
  }

  protected create(): CounterSeries {
    return new CounterSeries();
  }

  // as prom-client's counters: a label set appears once it has counted something
  protected samples(labels: Labels, s: CounterSeries): Sample[] {
    return s.value > 0 ? [{ labels, value: s.value }] : [];
  }
}

export class HistogramSeries {
  /** Observations per bucket (not cumulative); the last one is +Inf. */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

export class TallyHistogram extends Tally<HistogramSeries> {
  constructor(name: string, help: string, private readonly bounds: readonly number[], registry: client.Registry) {
    super(name, help, 'histogram', registry);
  }

  protected create(): HistogramSeries {
    return new HistogramSeries(this.bounds);
  }

  protected samples(labels: Labels, s: HistogramSeries): Sample[] {
    if (s.count === 0) return [];
    let cumulative = 0;
    const buckets = this.bounds.map((le, i): Sample => {
      cumulative += s.counts[i]!;
      return { labels: { le, ...labels }, value: cumulative, metricName: `${this.name}_bucket` };
    });
    return [
      ...buckets,
      { labels: { le: '+Inf', ...labels }, value: s.count, metricName: `${this.name}_bucket` },
      { labels, value: s.sum, metricName: `${this.name}_sum` },
      { labels, value: s.count, metricName: `${this.name}_count` },
    ];
  }
}
