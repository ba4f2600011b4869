// Claiming and the other statements a worker runs all the time must not read the finished
// jobs: with a table that holds many of them, every statement's plan reaches sluice.jobs through
// an index, never a sequential scan.
import { expect } from 'chai';
import pg from 'pg';
import { loadQueries, queryFile, type QueryName } from '../src/db/queries.js';
import { claimJobs } from '../src/runner/claim.js';
import { SCAN_WINDOW } from '../src/dashboard/api.js';
import { createTestDatabase } from './support/db.js';
import { migrated } from './support/worker.js';

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  Plans?: PlanNode[];
}

/** How the plan reads sluice.jobs: the index of each scan, or the scan's type when it uses none. */
function accessOf(node: PlanNode, out: string[] = []): string[] {
  if ((node['Relation Name'] === 'jobs' && node['Node Type'] !== 'ModifyTable') || node['Index Name']?.startsWith('jobs_')) {
    out.push(node['Index Name'] ?? node['Node Type']);
  }
  for (const child of node.Plans ?? []) accessOf(child, out);
  return out;
}

function scansOf(node: PlanNode, out: string[] = []): string[] {
  if (node['Relation Name'] === 'jobs') out.push(node['Node Type']);
  for (const child of node.Plans ?? []) scansOf(child, out);
  return out;
}

describe('query plans with 300,000 finished jobs', function () {
  let pool: pg.Pool;
  const q = loadQueries('sluice');

  before(async function () {
    this.timeout(120_000);
    pool = await migrated(await createTestDatabase());
    await pool.query(`
      INSERT INTO sluice.jobs (task, status, attempts, run_at, created_at, started_at, finished_at)
      SELECT 'old', CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END, 1, t, t, t, t
      FROM (SELECT g, now() - make_interval(secs => g / 100.0) AS t FROM generate_series(1, 300000) g) s`);
    await pool.query("INSERT INTO sluice.jobs (task) SELECT 'new' FROM generate_series(1, 100)");
    await pool.query("UPDATE sluice.jobs SET status = 'running', locked_by = 'w1', lock_token = 1 WHERE id IN (SELECT id FROM sluice.jobs WHERE status = 'queued' LIMIT 10)");
    await pool.query('ANALYZE sluice.jobs');
  });
  after(() => pool.end());

  const element = { id: 1, token: 1, result: null, error: 'x', retry: true, delay_ms: 10 };
  const params: Partial<Record<QueryName, object>> = {
    claim_jobs: { queues: ['default', 'other'], limits: [50, 50], windowsMs: [0, 10_000], tasks: ['new', 'other'], workerId: 'w1' },
    claim_jobs_one_queue: { queue: 'default', limit: 50, windowMs: 10_000, tasks: ['new', 'other'], workerId: 'w1' },
    complete_jobs: { completions: JSON.stringify(Array.from({ length: 50 }, (_, i) => ({ ...element, id: i + 1 }))) },
    delete_completed_jobs: { completions: JSON.stringify(Array.from({ length: 50 }, (_, i) => ({ ...element, id: i + 1 }))) },
    fail_jobs: { failures: JSON.stringify([element]) },
    release_jobs: { ids: ['1', '2'], tokens: ['1', '1'] },
    snooze_jobs: { snoozes: JSON.stringify([{ id: 1, token: 1, delay_ms: 1000 }]) },
    release_orphans: { workerId: 'w1', runningIds: ['1', '2'], olderThanMs: 10_000 },
    lost_jobs: { ids: ['1', '2'], tokens: ['1', '1'] },
    rescue_jobs: { deadAfterMs: 15_000 },
    prune_jobs: { keepCompletedMs: 86_400_000, keepFailedMs: 7 * 86_400_000, batchSize: 1000 },
    queue_depth: {},
    jobs_before_window: { queue: 'default', tasks: ['new', 'other'], windowMs: 10_000 },
  };

  for (const [name, values] of Object.entries(params) as [QueryName, object][]) {
    it(`${name} reads sluice.jobs through indexes only`, async () => {
      const statement = (q[name] as { config(p: object): { text: string; values?: unknown[] } }).config(values);
      const res = await pool.query({ text: `EXPLAIN (FORMAT JSON) ${statement.text}`, values: statement.values });
      const scans = scansOf(res.rows[0]['QUERY PLAN'][0].Plan);
      expect(scans, `${name} scans jobs with: ${scans.join(', ')}`).to.not.be.empty;
      expect(scans, `${name} scans jobs with: ${scans.join(', ')}`).to.not.include('Seq Scan');
    });
  }

  // Each job a worker runs leaves a dead entry in jobs_running_idx (its running version) until
  // vacuum removes it, which a held xmin postpones for as long as it is held. A plan that reaches
  // the few running jobs through that index reads every one of those entries at every call; by id
  // through the primary key it reads only the jobs named. This table has the steady state's shape
  // (10 running, many finished), for which the planner likes jobs_running_idx best.
  const BY_ID: QueryName[] = ['complete_jobs', 'delete_completed_jobs', 'fail_jobs', 'snooze_jobs', 'release_jobs', 'lost_jobs'];
  for (const name of BY_ID) {
    it(`${name} reaches its jobs by primary key only`, async () => {
      const statement = (q[name] as { config(p: object): { text: string; values?: unknown[] } }).config(params[name]!);
      const res = await pool.query({ text: `EXPLAIN (FORMAT JSON) ${statement.text}`, values: statement.values });
      const access = accessOf(res.rows[0]['QUERY PLAN'][0].Plan);
      expect(access, `${name} reaches jobs through: ${access.join(', ')}`).to.not.be.empty;
      expect([...new Set(access)], `${name} reaches jobs through: ${access.join(', ')}`).to.deep.equal(['jobs_pkey']);
    });
  }

  // KEDA polls `SELECT sluice.queue_depth('default')`; EXPLAIN of the call shows only a Result, so
  // auto_explain reports the plans of the statement inside the function
  for (const call of ["sluice.queue_depth('default')", 'sluice.queue_depth()']) {
    it(`${call} reads sluice.jobs through indexes only`, async () => {
      const c = await pool.connect();
      const plans: PlanNode[] = [];
      const onNotice = (n: { message?: string }) => {
        const json = n.message?.slice(n.message.indexOf('{'));
        if (json) plans.push(JSON.parse(json).Plan);
      };
      c.on('notice', onNotice);
      try {
        await c.query("LOAD 'auto_explain'");
        await c.query('SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; SET auto_explain.log_level = notice; SET auto_explain.log_format = json');
        const depth = (await c.query(`SELECT ${call} AS n`)).rows[0].n;
        // 100 added, 10 of them running
        expect(Number(depth)).to.equal(90);
      } finally {
        c.off('notice', onNotice);
        await c.query('RESET ALL').catch(() => undefined);
        c.release(true);
      }
      const scans = plans.flatMap((p) => scansOf(p));
      expect(scans, `${call} scans jobs with: ${scans.join(', ')}`).to.not.be.empty;
      expect(scans, `${call} scans jobs with: ${scans.join(', ')}`).to.not.include('Seq Scan');
    });
  }

  // its statements run inside a function, out of EXPLAIN's sight: count the scans instead
  // 10 jobs run already (with keys of their own)
  for (const limits of ['concurrency => 20', 'key_concurrency => 1', 'rate_limit => 100', 'concurrency => 20, key_concurrency => 2, rate_limit => 100']) {
    it(`claim_controlled_jobs (${limits}) reads sluice.jobs through indexes only`, async () => {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query(`SELECT sluice.set_queue_limits('default', ${limits})`);
        await client.query("UPDATE sluice.jobs SET concurrency_key = CASE WHEN status = 'running' THEN 'r' || id ELSE 'k' || (id % 3) END WHERE status IN ('queued', 'running')");
        const before = await client.query("SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relid = 'sluice.jobs'::regclass");
        const claimed = await client.query(q.claim_controlled_jobs.config({ queues: ['default'], limits: [50], tasks: ['new'], workerId: 'w2' }));
        const after = await client.query("SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relid = 'sluice.jobs'::regclass");
        expect(claimed.rows.filter((r) => r.id !== null), 'jobs claimed').to.not.be.empty;
        expect(Number(after.rows[0].seq_scan) - Number(before.rows[0].seq_scan), 'sequential scans of sluice.jobs').to.equal(0);
        expect(Number(after.rows[0].idx_scan) - Number(before.rows[0].idx_scan), 'index scans of sluice.jobs').to.be.above(0);
      } finally {
        await client.query('ROLLBACK');
        client.release();
      }
    });
  }

  it('every query that touches sluice.jobs is checked here', () => {
    const touching = Object.entries(q)
      // the statements a worker runs all the time (sql/queries), not the operator's (sql/admin)
      .filter(([name]) => queryFile(name as QueryName).startsWith('queries/'))
      // a name inside a string literal ('"sluice".jobs'::regclass) reads no rows; VACUUM and ANALYZE
      // read the table as maintenance, not through a plan
      .filter(([, query]) => /(?<!')(?<!(?:VACUUM|ANALYZE) (?:\([A-Z_, ]+\) )?)"sluice"\.jobs\b/.test(query.text))
      .map(([name]) => name)
      .sort();
    // claim_controlled_jobs reads the table inside a function: its scans are counted above
    expect(touching).to.deep.equal([...Object.keys(params), 'claim_controlled_jobs'].sort());
  });
});

describe('claim plans', () => {
  let pool: pg.Pool;
  before(async () => {
    // one connection, so that every claim and the look at its prepared statements share it
    pool = await migrated(await createTestDatabase(), 1);
    await pool.query("INSERT INTO sluice.jobs (task, queue) SELECT 'x', CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 400) g");
    await pool.query('ANALYZE sluice.jobs');
  });
  after(() => pool.end());

  it('plans the claim of a one-queue worker once, not at every call, and claims in order', async () => {
    const q = loadQueries('sluice');
    const claimed: string[] = [];
    for (let i = 0; i < 12; i++) claimed.push(...(await claimJobs(pool, q, [{ queue: 'a', limit: 5 }], ['x'], 'w1', new Set())).jobs.map((j) => j.id));
    const ids = (await pool.query("SELECT id FROM sluice.jobs WHERE queue = 'a' ORDER BY id LIMIT 60")).rows.map((r) => String(r.id));
    expect(claimed).to.deep.equal(ids);
    const plans = await pool.query("SELECT generic_plans::int AS generic FROM pg_prepared_statements WHERE name = 'sluice.claim_jobs_one_queue_5'");
    expect(plans.rows[0].generic).to.be.above(0);
    // several queues: the general statement, each queue's own limit, in order within each queue
    const next = async (queue: string, n: number) =>
      (await pool.query("SELECT id FROM sluice.jobs WHERE status = 'queued' AND queue = $1 ORDER BY priority, run_at, id LIMIT $2", [queue, n])).rows.map((r) => String(r.id));
    const expected = [...(await next('a', 1)), ...(await next('b', 3))];
    const got = (await claimJobs(pool, q, [{ queue: 'a', limit: 1 }, { queue: 'b', limit: 3 }], ['x'], 'w1', new Set())).jobs;
    expect(got.map((j) => j.id).sort()).to.deep.equal([...expected].sort());
    expect(got.filter((j) => j.queue === 'b').map((j) => j.id)).to.deep.equal(expected.slice(1));
  });
});

describe('claiming past queued jobs of tasks the worker does not handle', () => {
  let pool: pg.Pool;
  before(async () => {
    pool = await migrated(await createTestDatabase(), 1);
    // 10,000 jobs of a task this worker has no handler for, all ahead of its own in the queue
    await pool.query("INSERT INTO sluice.jobs (task, run_at) SELECT 'theirs', now() - interval '1 hour' FROM generate_series(1, 10000)");
    await pool.query("INSERT INTO sluice.jobs (task) SELECT 'mine' FROM generate_series(1, 5)");
    await pool.query('ANALYZE sluice.jobs');
  });
  after(() => pool.end());

  /** The index scans of an executed claim, with the rows each returned and filtered out. */
  async function claimScans(statement: { text: string; values?: unknown[] }) {
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      const res = await c.query({ text: `EXPLAIN (ANALYZE, FORMAT JSON) ${statement.text}`, values: statement.values });
      await c.query('ROLLBACK');
      const scans: { type: string; rows: number; removed: number }[] = [];
      const walk = (n: PlanNode & { 'Actual Rows'?: number; 'Rows Removed by Filter'?: number; 'Actual Loops'?: number }) => {
        if (n['Relation Name'] === 'jobs' && n['Node Type'] !== 'ModifyTable') {
          scans.push({ type: n['Node Type'], rows: n['Actual Rows']! * (n['Actual Loops'] ?? 1), removed: n['Rows Removed by Filter'] ?? 0 });
        }
        for (const child of n.Plans ?? []) walk(child);
      };
      walk(res.rows[0]['QUERY PLAN'][0].Plan);
      return scans;
    } finally {
      c.release();
    }
  }

  it('reads only the handled task\'s head of the queue, in one and in several queues', async () => {
    const q = loadQueries('sluice');
    for (const statement of [
      q.claim_jobs_one_queue.config({ queue: 'default', limit: 5, windowMs: 0, tasks: ['mine'], workerId: 'w1' }),
      q.claim_jobs.config({ queues: ['default', 'other'], limits: [5, 5], windowsMs: [0, 0], tasks: ['mine'], workerId: 'w1' }),
    ]) {
      const scans = await claimScans(statement);
      const reads = scans.filter((s) => s.type !== 'Index Scan' || s.rows > 0);
      expect(scans.map((s) => s.type), JSON.stringify(scans)).to.not.include('Seq Scan');
      // the 5 claimable rows, looked up again by id for the update, and nothing of the 10,000
      expect(reads.reduce((n, s) => n + s.rows + s.removed, 0), JSON.stringify(scans)).to.be.at.most(10);
    }
    const claimed = (await claimJobs(pool, q, [{ queue: 'default', limit: 10 }], ['mine'], 'w1', new Set())).jobs;
    expect(claimed.map((j) => j.task)).to.deep.equal(['mine', 'mine', 'mine', 'mine', 'mine']);
  });
});

// A held xmin keeps the dead entry of every job claimed since it began at the head of the runnable
// index. A claim with a window (worker.claimWindowMs) starts at the window's edge instead.
describe('claim window', () => {
  let url: string;
  let pool: pg.Pool;
  const q = loadQueries('sluice');
  before(async () => {
    url = await createTestDatabase();
    pool = await migrated(url, 2);
  });
  after(() => pool.end());
  afterEach(() => pool.query('TRUNCATE sluice.jobs'));

  interface BufferNode {
    'Index Name'?: string;
    'Shared Hit Blocks': number;
    'Shared Read Blocks': number;
    Plans?: BufferNode[];
  }
  /** The buffers the claim's scans of the runnable index read, and the tasks it claimed, in a transaction rolled back. */
  async function tryClaim(statement: { text: string; values?: unknown[] }): Promise<{ buffers: number; tasks: string[] }> {
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      const res = await c.query({ text: `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${statement.text}`, values: statement.values });
      let buffers = 0;
      const walk = (n: BufferNode) => {
        if (n['Index Name'] === 'jobs_runnable_task_idx') buffers += n['Shared Hit Blocks'] + n['Shared Read Blocks'];
        n.Plans?.forEach(walk);
      };
      walk(res.rows[0]['QUERY PLAN'][0].Plan);
      const claimed = await c.query("SELECT task FROM sluice.jobs WHERE status = 'running'");
      await c.query('ROLLBACK');
      return { buffers, tasks: claimed.rows.map((r) => r.task as string) };
    } finally {
      c.release();
    }
  }
  const claims = (windowMs: number) => [
    q.claim_jobs_one_queue.config({ queue: 'default', limit: 20, windowMs, tasks: ['t'], workerId: 'w1' }),
    q.claim_jobs.config({ queues: ['default', 'other'], limits: [20, 20], windowsMs: [windowMs, windowMs], tasks: ['t'], workerId: 'w1' }),
  ];

  it('leaves out only priority-0 jobs due before the window; a full claim takes them first', async () => {
    await pool.query(`INSERT INTO sluice.jobs (task, priority, run_at, payload) VALUES
      ('t', 0, now() - interval '1 hour', '{"n": "old"}'), ('t', 3, now() - interval '1 hour', '{"n": "old, priority 3"}'),
      ('t', 0, now(), '{"n": "new"}')`);
    for (const [windowMs, expected] of [
      [10_000, ['new', 'old, priority 3']],
      [0, ['old', 'new', 'old, priority 3']],
    ] as const) {
      for (const statement of claims(windowMs)) {
        const c = await pool.connect();
        try {
          await c.query('BEGIN');
          const rows = (await c.query(statement)).rows as { payload: { n: string }; priority: number; run_at_ms: number }[];
          await c.query('ROLLBACK');
          const order = [...rows].sort((a, b) => a.priority - b.priority || a.run_at_ms - b.run_at_ms).map((r) => r.payload.n);
          expect(order, `window ${windowMs} ms`).to.deep.equal(expected);
        } finally {
          c.release();
        }
      }
    }
  });

  it('under a held xmin, starts at the window instead of reading the dead entries of every job claimed', async function () {
    this.timeout(120_000);
    await pool.query("INSERT INTO sluice.jobs (task, run_at) SELECT 't', now() - make_interval(secs => 120 - g / 1000.0) FROM generate_series(1, 30000) g");
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    try {
      await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await holder.query('SELECT txid_current()');
      // claimed and finished while the xmin is held: 30,000 dead entries at the head of the index
      await pool.query("UPDATE sluice.jobs SET status = 'completed' WHERE status = 'queued'");
      await pool.query("INSERT INTO sluice.jobs (task) SELECT 't' FROM generate_series(1, 20)");
      for (const [full, windowed] of claims(0).map((f, i) => [f, claims(10_000)[i]!] as const)) {
        const a = await tryClaim(full);
        const b = await tryClaim(windowed);
        expect(a.tasks, 'full claim').to.have.length(20);
        expect(b.tasks, 'claim with a window').to.have.length(20);
        expect(b.buffers, `buffers with a window (${b.buffers}) against without (${a.buffers})`).to.be.below(a.buffers / 10);
      }
    } finally {
      await holder.end();
    }
  });
});

describe('dashboard statements with 10,000,000 finished jobs', function () {
  const FINISHED = 10_000_000;
  let pool: pg.Pool;
  const q = loadQueries('sluice');

  before(async function () {
    this.timeout(900_000);
    pool = await migrated(await createTestDatabase(), 1);
    // finished over the days before the last hour, in id order (as a real table fills): 1 in 100
    // failed, 1 in 10,000 cancelled, 1 in 100,000 in the queue "rare"
    await pool.query(`
      INSERT INTO sluice.jobs (task, queue, status, attempts, job_key, last_error, run_at, created_at, started_at, finished_at)
      SELECT CASE WHEN g % 3 = 0 THEN 'resize' ELSE 'mail' END,
             CASE WHEN g % 100000 = 7 THEN 'rare' ELSE 'default' END,
             CASE WHEN g % 10000 = 3 THEN 'cancelled' WHEN g % 100 = 1 THEN 'failed' ELSE 'completed' END,
             1, CASE WHEN g % 1000 = 0 THEN 'key-' || g END,
             CASE WHEN g % 100 = 1 THEN 'Error: connection refused ' || g END, t, t, t, t
      FROM (SELECT g, now() - interval '2 hours' - make_interval(secs => (${FINISHED} - g) / 50.0) AS t
            FROM generate_series(1, ${FINISHED}) g) s`);
    await pool.query("INSERT INTO sluice.jobs (task) SELECT 'new' FROM generate_series(1, 100)");
    await pool.query("UPDATE sluice.jobs SET status = 'running', locked_by = 'w1', lock_token = 1 WHERE id IN (SELECT id FROM sluice.jobs WHERE status = 'queued' LIMIT 10)");
    // as autovacuum would have by now: statistics, and the BRIN summaries of the new page ranges
    // (a range not summarised yet is read by every BRIN scan)
    await pool.query('VACUUM ANALYZE sluice.jobs');
  });
  after(() => pool?.end());

  interface Read {
    type: string;
    rows: number;
    removed: number;
  }
  /** The scans of sluice.jobs in an executed statement, with the rows each returned and threw away. */
  async function reads(statement: { text: string; values?: unknown[] }): Promise<Read[]> {
    const res = await pool.query({ text: `EXPLAIN (ANALYZE, FORMAT JSON) ${statement.text}`, values: statement.values });
    const out: Read[] = [];
    const walk = (n: PlanNode & Record<string, unknown>) => {
      if (n['Relation Name'] === 'jobs') {
        const loops = (n['Actual Loops'] as number | undefined) ?? 1;
        out.push({
          type: n['Node Type'],
          rows: (n['Actual Rows'] as number) * loops,
          removed: ((n['Rows Removed by Filter'] as number | undefined) ?? 0) + ((n['Rows Removed by Index Recheck'] as number | undefined) ?? 0),
        });
      }
      for (const child of n.Plans ?? []) walk(child as PlanNode & Record<string, unknown>);
    };
    walk(res.rows[0]['QUERY PLAN'][0].Plan);
    return out;
  }
  const total = (r: Read[]) => r.reduce((n, s) => n + s.rows + s.removed, 0);

  const filters: [string, { status?: string; queue?: string; task?: string; jobKey?: string; error?: string }][] = [
    ['no filter', {}],
    ['state failed', { status: 'failed' }],
    ['state cancelled (rare)', { status: 'cancelled' }],
    ['state queued', { status: 'queued' }],
    ['state running', { status: 'running' }],
    ['a rare queue', { queue: 'rare' }],
    ['queue and task', { queue: 'default', task: 'resize' }],
    ['a job key', { jobKey: 'key-9999000' }],
    ['text in the last error', { error: '%refused 99%' }],
    ['failed with error text', { status: 'failed', error: '%refused%' }],
  ];
  for (const [what, f] of filters) {
    it(`a page of the job list reads at most its window of ids (${what})`, async () => {
      const { max_id } = (await q.jobs_bounds.run(pool, {})).rows[0]!;
      const before = String(BigInt(max_id!) + 1n);
      const floor = String(BigInt(before) - SCAN_WINDOW);
      const statement = q.jobs_page.config({
        before,
        floor,
        status: f.status ?? null,
        queue: f.queue ?? null,
        task: f.task ?? null,
        jobKey: f.jobKey ?? null,
        error: f.error ?? null,
        limit: 50,
      });
      const scans = await reads(statement);
      expect(scans.map((s) => s.type), JSON.stringify(scans)).to.not.include('Seq Scan');
      expect(total(scans), JSON.stringify(scans)).to.be.at.most(Number(SCAN_WINDOW) + 50);
    });
  }

  it('the first page of all jobs and of failed jobs reads about one page of rows', async () => {
    const { max_id } = (await q.jobs_bounds.run(pool, {})).rows[0]!;
    const page = (status: string | null) =>
      q.jobs_page.config({ before: String(BigInt(max_id!) - 200n), floor: String(BigInt(max_id!) - 200n - SCAN_WINDOW), status, queue: null, task: null, jobKey: null, error: null, limit: 50 });
    const all = await reads(page(null));
    expect(total(all), JSON.stringify(all)).to.be.at.most(60);
    const failed = await reads(page('failed'));
    // through jobs_failed_idx: the failed ones and the few cancelled ones between them
    expect(total(failed), JSON.stringify(failed)).to.be.at.most(60);
  });

  for (const name of ['jobs_bounds', 'queue_list', 'dashboard_throughput'] as const) {
    it(`${name} reads only unfinished or recent jobs`, async () => {
      const scans = await reads(q[name].config({}));
      expect(scans.map((s) => s.type), JSON.stringify(scans)).to.not.include('Seq Scan');
      // BRIN reads whole page ranges: the last range of the finished jobs may come along
      expect(total(scans), JSON.stringify(scans)).to.be.at.most(name === 'dashboard_throughput' ? 30_000 : 200);
    });
  }
});
