// The sluice dashboard in the browser: Preact + htm, no build step. Every value from the database
// is rendered as text (Preact escapes it); nothing is ever inserted as HTML. Pages poll their
// API every few seconds, so counts change without a reload.
import { h, render } from 'preact';
import { useEffect, useRef, useState, useCallback } from 'preact/hooks';
import htm from 'htm';
import uPlot from 'uplot';

const html = htm.bind(h);
const POLL_MS = 2000;

let session = { readOnly: true, csrf: null, loggedIn: false };

async function api(path) {
  const res = await fetch(`api/${path}`, { credentials: 'same-origin', headers: { accept: 'application/json' } });
  if (res.status === 401) {
    location.reload();
    throw new Error('logged out');
  }
  const body = await res.json();
  if (!res.ok) throw new Error(body.error ?? `HTTP ${res.status}`);
  return body;
}

async function post(path, body = {}) {
  const res = await fetch(`api/${path}`, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', 'x-sluice-csrf': session.csrf ?? '' },
    body: JSON.stringify(body),
  });
  const out = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(out.error ?? `HTTP ${res.status}`);
  return out;
}

/** Fetches `path` now and every POLL_MS while the view shows it; `reload` fetches at once. */
function usePoll(path) {
  const [state, setState] = useState({ data: null, error: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    let timer;
    const load = async () => {
      try {
        const data = await api(path);
        if (live) setState({ data, error: null });
      } catch (err) {
        if (live) setState((s) => ({ data: s.data, error: err.message }));
      }
      if (live) timer = setTimeout(load, POLL_MS);
    };
    load();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [path, tick]);
  return { ...state, reload: useCallback(() => setTick((t) => t + 1), []) };
}

function useRoute() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  const raw = hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  return { path, params: new URLSearchParams(query) };
}

const go = (path, params) => {
  const q = params ? new URLSearchParams([...params].filter(([, v]) => v !== '' && v != null)).toString() : '';
  location.hash = q ? `${path}?${q}` : path;
};

function age(ms) {
  if (ms === null || ms === undefined) return '-';
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
const time = (iso) => (iso ? new Date(iso).toLocaleString() : '-');
const json = (v) => (v === null || v === undefined ? '-' : JSON.stringify(v, null, 2));

function ErrorBanner({ error }) {
  return error ? html`<p class="error" role="alert">${error}</p>` : null;
}

function Chart({ series }) {
  const el = useRef(null);
  const plot = useRef(null);
  const data = [series.minutes.map((m) => m / 1000), series.completed, series.failed];
  useEffect(() => {
    plot.current = new uPlot(
      {
        width: 420,
        height: 140,
        legend: { show: true },
        scales: { x: { time: true } },
        axes: [{}, { size: 40 }],
        series: [{}, { label: 'completed / min', stroke: '#2b8a3e', width: 1.5 }, { label: 'failed / min', stroke: '#c92a2a', width: 1.5 }],
      },
      data,
      el.current,
    );
    return () => plot.current.destroy();
  }, []);
  useEffect(() => {
    plot.current?.setData(data);
  }, [JSON.stringify(data)]);
  return html`<div class="chart" ref=${el}></div>`;
}

const limitText = (l) =>
  [
    l.concurrency !== null ? `at most ${l.concurrency} running` : null,
    l.keyConcurrency !== null ? `${l.keyConcurrency} per key` : null,
    l.rateLimit !== null ? `${l.rateLimit} starts per ${age(l.ratePeriodMs)}` : null,
  ]
    .filter(Boolean)
    .join(', ') || 'no limits';

function QueueControls({ q, reload }) {
  const [editing, setEditing] = useState(false);
  const [form, setForm] = useState({});
  const [error, setError] = useState(null);
  const act = async (action, body) => {
    try {
      await post(`queues/${encodeURIComponent(q.queue)}/${action}`, body);
      setError(null);
      setEditing(false);
    } catch (err) {
      setError(err.message);
    }
    reload();
  };
  const edit = () => {
    const l = q.limits;
    setForm({ concurrency: l.concurrency ?? '', keyConcurrency: l.keyConcurrency ?? '', rateLimit: l.rateLimit ?? '', ratePeriodMs: l.ratePeriodMs });
    setEditing(true);
  };
  const num = (v) => (v === '' || v === null ? null : Number(v));
  const save = (e) => {
    e.preventDefault();
    act('limits', { concurrency: num(form.concurrency), keyConcurrency: num(form.keyConcurrency), rateLimit: num(form.rateLimit), ratePeriodMs: num(form.ratePeriodMs) });
  };
  const input = (name, label) => html`<label>${label}<input name=${name} type="number" min="1" value=${form[name]} onInput=${(e) => setForm({ ...form, [name]: e.target.value })} /></label>`;
  return html`
    <p class="limits-line"><span data-testid="limits">${limitText(q.limits)}</span></p>
    ${session.readOnly
      ? null
      : html`<div class="actions">
          ${q.paused
            ? html`<button data-testid="resume" onClick=${() => act('resume')}>Resume</button>`
            : html`<button data-testid="pause" onClick=${() => act('pause')}>Pause</button>`}
          ${editing ? null : html`<button data-testid="edit-limits" onClick=${edit}>Edit limits</button>`}
        </div>`}
    ${editing
      ? html`<form class="limits" onSubmit=${save}>
          ${input('concurrency', 'Concurrency')} ${input('keyConcurrency', 'Per key')} ${input('rateLimit', 'Rate limit')} ${input('ratePeriodMs', 'per ms')}
          <button type="submit" data-testid="save-limits">Save</button>
          <button type="button" onClick=${() => setEditing(false)}>Cancel</button>
        </form>`
      : null}
    <${ErrorBanner} error=${error} />
  `;
}

function Overview() {
  const { data, error, reload } = usePoll('overview');
  if (!data) return html`<${ErrorBanner} error=${error} /><p>Loading…</p>`;
  return html`
    <${ErrorBanner} error=${error} />
    <p class="summary">${data.liveWorkers} live worker${data.liveWorkers === 1 ? '' : 's'}, ${data.queues.length} queue${data.queues.length === 1 ? '' : 's'}. Finished counts cover the last hour.</p>
    ${data.queues.length === 0 ? html`<p>No jobs and no workers yet.</p>` : null}
    <div class="queues">
      ${data.queues.map(
        (q) => html`
          <section class="queue" key=${q.queue} data-queue=${q.queue}>
            <h2><a href=${`#/jobs?queue=${encodeURIComponent(q.queue)}`}>${q.queue}</a> ${q.paused ? html`<span class="paused" data-testid="paused">paused</span>` : null}</h2>
            <table class="counts">
              <tr>
                <th>runnable</th><th>scheduled</th><th>running</th><th>completed 1h</th><th>failed 1h</th><th>cancelled 1h</th><th>oldest runnable</th><th>workers</th>
              </tr>
              <tr>
                <td data-testid="runnable">${q.runnable}</td>
                <td data-testid="scheduled">${q.scheduled}</td>
                <td data-testid="running">${q.running}</td>
                <td data-testid="completed">${q.completed}</td>
                <td data-testid="failed">${q.failed}</td>
                <td data-testid="cancelled">${q.cancelled}</td>
                <td>${age(q.oldestRunnableMs)}</td>
                <td>${q.workers}</td>
              </tr>
            </table>
            <${QueueControls} q=${q} reload=${reload} />
            <${Chart} series=${q.series} />
          </section>
        `,
      )}
    </div>
  `;
}

const STATES = ['', 'queued', 'running', 'completed', 'failed', 'cancelled'];
const ACTION_STATES = { retry: ['failed', 'cancelled', 'completed'], cancel: ['queued', 'running'], 'run-now': ['queued'], delete: ['failed', 'cancelled', 'completed', 'queued'] };
const ACTION_LABELS = { retry: 'Retry', cancel: 'Cancel', 'run-now': 'Run now', delete: 'Delete' };

function Jobs({ params }) {
  const filter = Object.fromEntries(['queue', 'task', 'state', 'key', 'error'].map((k) => [k, params.get(k) ?? '']));
  const before = params.get('before') ?? '';
  const query = new URLSearchParams([...Object.entries(filter), ['before', before]].filter(([, v]) => v !== '')).toString();
  const { data, error, reload } = usePoll(`jobs?${query}`);
  const [form, setForm] = useState(filter);
  const [bulk, setBulk] = useState({ pending: null, message: null, error: null });
  useEffect(() => setForm(filter), [query]);
  const submit = (e) => {
    e.preventDefault();
    go('/jobs', Object.entries(form));
  };
  const runBulk = async (action) => {
    setBulk({ pending: null, message: `${ACTION_LABELS[action]}…`, error: null });
    try {
      let done = 0;
      let skipped = 0;
      let cursor;
      do {
        const r = await post('jobs/bulk', { action, filter, before: cursor });
        done += r.done;
        skipped += r.skipped;
        cursor = r.next;
      } while (cursor);
      setBulk({ pending: null, message: `${ACTION_LABELS[action]}: ${done} job${done === 1 ? '' : 's'} done${skipped ? `, ${skipped} skipped (changed state meanwhile)` : ''}.`, error: null });
    } catch (err) {
      setBulk({ pending: null, message: null, error: err.message });
    }
    reload();
  };
  const field = (name, label, attrs = {}) => html`
    <label>${label}<input name=${name} value=${form[name]} onInput=${(e) => setForm({ ...form, [name]: e.target.value })} ...${attrs} /></label>
  `;
  const bulkActions = Object.keys(ACTION_STATES).filter((a) => ACTION_STATES[a].includes(filter.state));
  return html`
    <form class="filters" onSubmit=${submit}>
      ${field('queue', 'Queue')} ${field('task', 'Task')}
      <label>State
        <select name="state" value=${form.state} onChange=${(e) => setForm({ ...form, state: e.target.value })}>
          ${STATES.map((s) => html`<option value=${s}>${s || 'any'}</option>`)}
        </select>
      </label>
      ${field('key', 'Job key')} ${field('error', 'Error contains')}
      <button type="submit">Filter</button>
      <button type="button" onClick=${() => go('/jobs')}>Clear</button>
    </form>
    ${!session.readOnly && bulkActions.length
      ? html`<div class="bulk">
          On every ${filter.state} job matching this filter:
          ${bulkActions.map((a) =>
            bulk.pending === a
              ? html`<button class="danger" data-testid=${`bulk-confirm-${a}`} onClick=${() => runBulk(a)}>Confirm ${ACTION_LABELS[a].toLowerCase()} all</button>
                  <button onClick=${() => setBulk({ ...bulk, pending: null })}>Keep</button>`
              : html`<button data-testid=${`bulk-${a}`} onClick=${() => setBulk({ pending: a, message: null, error: null })}>${ACTION_LABELS[a]} all</button>`,
          )}
        </div>`
      : null}
    ${bulk.message ? html`<p class="notice" role="status">${bulk.message}</p>` : null}
    <${ErrorBanner} error=${bulk.error ?? error} />
    ${data
      ? html`
          <table class="jobs">
            <thead><tr><th>id</th><th>queue</th><th>task</th><th>state</th><th>attempts</th><th>run at</th><th>job key</th><th>last error</th></tr></thead>
            <tbody>
              ${data.jobs.map(
                (j) => html`<tr data-job=${j.id}>
                  <td><a href=${`#/jobs/${j.id}`}>${j.id}</a></td>
                  <td>${j.queue}</td>
                  <td class="task">${j.task}</td>
                  <td><span class=${`state ${j.status}`}>${j.status}</span></td>
                  <td>${j.attempts}/${j.maxAttempts}</td>
                  <td>${time(j.runAt)}</td>
                  <td>${j.jobKey ?? ''}</td>
                  <td class="last-error">${j.lastError ?? ''}</td>
                </tr>`,
              )}
            </tbody>
          </table>
          ${data.jobs.length === 0 ? html`<p>No job matches${before ? ` below id ${before}` : ''}.</p>` : null}
          <nav class="pager">
            ${before ? html`<button onClick=${() => go('/jobs', Object.entries(filter))}>Newest</button>` : null}
            ${data.next ? html`<button data-testid="older" onClick=${() => go('/jobs', [...Object.entries(filter), ['before', data.next]])}>Older (ids below ${data.next})</button>` : null}
          </nav>
        `
      : html`<p>Loading…</p>`}
  `;
}

function JobDetail({ id }) {
  const { data, error, reload } = usePoll(`jobs/${encodeURIComponent(id)}`);
  const [result, setResult] = useState({ message: null, error: null });
  const act = async (action) => {
    try {
      const r = await post(`jobs/${encodeURIComponent(id)}/${action}`);
      if (action === 'delete') return go('/jobs');
      setResult({ message: `${ACTION_LABELS[action]}: job ${r.id} is ${r.status}.`, error: null });
    } catch (err) {
      setResult({ message: null, error: err.message });
    }
    reload();
  };
  if (!data) return html`<${ErrorBanner} error=${error} /><p>Loading…</p>`;
  const j = data;
  return html`
    <h2>Job ${j.id} <span class=${`state ${j.status}`} data-testid="job-state">${j.status}</span></h2>
    ${!session.readOnly
      ? html`<div class="actions">
          ${Object.keys(ACTION_STATES).map(
            (a) => html`<button data-testid=${`action-${a}`} disabled=${!ACTION_STATES[a].includes(j.status)} onClick=${() => act(a)}>${ACTION_LABELS[a]}</button>`,
          )}
        </div>`
      : html`<p class="notice">Read-only: set http.dashboardToken to retry, cancel or delete jobs here.</p>`}
    ${result.message ? html`<p class="notice" role="status">${result.message}</p>` : null}
    <${ErrorBanner} error=${result.error ?? error} />
    <table class="fields">
      <tr><th>task</th><td class="task" data-testid="job-task">${j.task}</td></tr>
      <tr><th>queue</th><td>${j.queue}</td></tr>
      <tr><th>priority</th><td>${j.priority}</td></tr>
      <tr><th>attempts</th><td>${j.attempts} of ${j.maxAttempts}</td></tr>
      <tr><th>run at</th><td>${time(j.runAt)}</td></tr>
      <tr><th>created</th><td>${time(j.createdAt)}</td></tr>
      <tr><th>started</th><td>${time(j.startedAt)}</td></tr>
      <tr><th>finished</th><td>${time(j.finishedAt)}</td></tr>
      <tr><th>job key</th><td>${j.jobKey ?? '-'}</td></tr>
      <tr><th>held by</th><td>${j.lockedBy ?? '-'}</td></tr>
    </table>
    <h3>Payload</h3>
    <pre data-testid="job-payload">${json(j.payload)}</pre>
    <h3>Result</h3>
    <pre>${json(j.result)}</pre>
    <h3>Attempts</h3>
    <p class="hint">The jobs table keeps the last 10 errors and the start of the latest attempt only.</p>
    <table class="attempts">
      <thead><tr><th>#</th><th>outcome</th><th>started</th><th>ended</th><th>took</th><th>error</th></tr></thead>
      <tbody>
        ${j.attemptList.map(
          (a) => html`<tr>
            <td>${a.attempt}</td>
            <td>${a.outcome}</td>
            <td>${time(a.startedAt)}</td>
            <td>${time(a.endedAt)}</td>
            <td>${a.startedAt && a.endedAt ? age(new Date(a.endedAt) - new Date(a.startedAt)) : '-'}</td>
            <td><pre class="error-text">${a.error ?? ''}</pre></td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${j.lastError ? html`<h3>Last error</h3><pre class="error-text" data-testid="job-last-error">${j.lastError}</pre>` : null}
  `;
}

function Workers() {
  const { data, error } = usePoll('workers');
  if (!data) return html`<${ErrorBanner} error=${error} /><p>Loading…</p>`;
  return html`
    <${ErrorBanner} error=${error} />
    ${data.length === 0 ? html`<p>No worker is registered.</p>` : null}
    <table class="workers">
      <thead><tr><th>worker</th><th>host</th><th>pid</th><th>queues</th><th>tasks</th><th>concurrency</th><th>pool</th><th>running</th><th>heartbeat</th><th>connections</th><th>version</th></tr></thead>
      <tbody>
        ${data.map(
          (w) => html`<tr class=${w.alive ? '' : 'dead'}>
            <td>${w.id}</td><td>${w.host}</td><td>${w.pid}</td><td>${w.queues.join(', ')}</td>
            <td class="task">${w.tasks === null ? 'all' : w.tasks.join(', ')}</td>
            <td>${w.concurrency}</td><td>${w.poolSize} + 1</td><td>${w.running}</td>
            <td>${age(w.heartbeatAgeSeconds * 1000)} ago${w.alive ? '' : ' (presumed dead)'}</td>
            <td>${w.connected ?? '?'}</td><td>${w.version ?? '-'}</td>
          </tr>`,
        )}
      </tbody>
    </table>
  `;
}

function Budget() {
  const { data: b, error } = usePoll('budget');
  if (!b) return html`<${ErrorBanner} error=${error} /><p>Loading…</p>`;
  return html`
    <${ErrorBanner} error=${error} />
    <table class="fields budget">
      <tr><th>max_connections</th><td data-testid="max-connections">${b.maxConnections}</td></tr>
      <tr><th>reserved (superuser and reserved_connections)</th><td>${b.reservedConnections}</td></tr>
      <tr><th>usable by ordinary roles</th><td>${b.usableConnections}</td></tr>
      <tr><th>in use now</th><td>${b.inUse}</td></tr>
      <tr><th>by sluice (workers, listeners, dashboard, CLI)</th><td>${b.sluiceConnected}</td></tr>
      <tr><th>by others</th><td>${b.others}</td></tr>
      <tr><th>budget of the live workers (pool + listener each)</th><td>${b.sluiceBudget}</td></tr>
      <tr><th>free now</th><td>${b.available}</td></tr>
    </table>
    <div class="bar" title="connections">
      <span class="bar-sluice" style=${{ width: `${(100 * b.sluiceConnected) / b.maxConnections}%` }}></span>
      <span class="bar-others" style=${{ width: `${(100 * b.others) / b.maxConnections}%` }}></span>
      <span class="bar-reserved" style=${{ width: `${(100 * b.reservedConnections) / b.maxConnections}%` }}></span>
    </div>
    <p class="legend"><span class="bar-sluice">sluice</span> <span class="bar-others">others</span> <span class="bar-reserved">reserved</span></p>
    <h3>Live workers</h3>
    <table class="workers">
      <thead><tr><th>worker</th><th>host</th><th>pid</th><th>budget</th><th>connected</th></tr></thead>
      <tbody>${b.sluice.map((w) => html`<tr><td>${w.id}</td><td>${w.host}</td><td>${w.pid}</td><td>${w.budget}</td><td>${w.connected ?? '?'}</td></tr>`)}</tbody>
    </table>
  `;
}

const bytes = (n) => (n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GiB` : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`);

function Health() {
  const { data: d, error } = usePoll('health');
  if (!d) return html`<${ErrorBanner} error=${error} /><p>Loading…</p>`;
  const x = d.xmin;
  return html`
    <${ErrorBanner} error=${error} />
    ${d.warnings.length
      ? html`<ul class="warnings" data-testid="health-warnings">${d.warnings.map((w) => html`<li>${w}</li>`)}</ul>`
      : html`<p class="notice" data-testid="health-ok">No health warning.</p>`}
    <h3>Oldest xmin horizon</h3>
    ${x
      ? html`<table class="fields">
          <tr><th>held for</th><td data-testid="xmin-age">${age(x.ageMs)}</td></tr>
          <tr><th>by</th><td>${x.pid === null ? 'a prepared transaction' : `pid ${x.pid}`}</td></tr>
          <tr><th>application_name</th><td>${x.applicationName ?? '-'}</td></tr>
          <tr><th>state</th><td>${x.state ?? '-'}</td></tr>
          <tr><th>since</th><td>${time(x.since)}</td></tr>
        </table>`
      : html`<p>No other session holds the horizon back.</p>`}
    <h3>Jobs table</h3>
    <table class="fields">
      <tr><th>live rows</th><td>${d.jobsTable.liveRows}</td></tr>
      <tr><th>dead rows</th><td data-testid="dead-rows">${d.jobsTable.deadRows}</td></tr>
      <tr><th>table size</th><td>${bytes(d.jobsTable.tableBytes)}</td></tr>
      <tr><th>index size</th><td>${bytes(d.jobsTable.indexBytes)}</td></tr>
      <tr><th>last vacuum</th><td>${time(d.jobsTable.lastVacuum)}</td></tr>
      <tr><th>last autovacuum</th><td>${time(d.jobsTable.lastAutovacuum)}</td></tr>
    </table>
    <h3>Server</h3>
    <table class="fields">
      <tr><th>NOTIFY queue</th><td>${(d.notifyQueueUsage * 100).toFixed(1)}% full</td></tr>
      <tr><th>connections</th><td>${d.connections.used} of ${d.connections.max} (${d.connections.bySluice} sluice)</td></tr>
    </table>
  `;
}

function Recurring() {
  const { data, error } = usePoll('cron');
  if (!data) return html`<${ErrorBanner} error=${error} /><p>Loading…</p>`;
  return html`
    <${ErrorBanner} error=${error} />
    ${data.length === 0 ? html`<p>No recurring jobs are configured (the <code>cron</code> section).</p>` : null}
    <table class="workers cron">
      <thead><tr><th>name</th><th>schedule</th><th>time zone</th><th>task</th><th>queue</th><th>next tick</th><th>last tick</th><th>its job</th></tr></thead>
      <tbody>
        ${data.map(
          (c) => html`<tr data-cron=${c.name}>
            <td>${c.name}</td><td><code>${c.schedule}</code></td><td>${c.timezone}</td><td class="task">${c.task}</td><td>${c.queue}</td>
            <td data-testid="next-tick">${time(c.nextTick)}</td><td data-testid="last-tick">${time(c.lastTick)}</td>
            <td>${c.lastJobId ? html`<a href=${`#/jobs/${c.lastJobId}`}>${c.lastJobId}</a> ${c.lastJobStatus ? html`<span class=${`state ${c.lastJobStatus}`}>${c.lastJobStatus}</span>` : null}` : '-'}</td>
          </tr>`,
        )}
      </tbody>
    </table>
  `;
}

const PAGES = [
  ['/', 'Overview'],
  ['/jobs', 'Jobs'],
  ['/workers', 'Workers'],
  ['/budget', 'Connections'],
  ['/cron', 'Recurring'],
  ['/health', 'Database health'],
];

function App() {
  const { path, params } = useRoute();
  const jobId = /^\/jobs\/([^/]+)$/.exec(path)?.[1];
  const page =
    jobId ? html`<${JobDetail} id=${decodeURIComponent(jobId)} />`
    : path === '/jobs' ? html`<${Jobs} params=${params} />`
    : path === '/workers' ? html`<${Workers} />`
    : path === '/budget' ? html`<${Budget} />`
    : path === '/health' ? html`<${Health} />`
    : path === '/cron' ? html`<${Recurring} />`
    : html`<${Overview} />`;
  const current = jobId ? '/jobs' : PAGES.some(([p]) => p === path) ? path : '/';
  return html`
    <header>
      <strong class="brand">sluice</strong>
      <nav>${PAGES.map(([p, label]) => html`<a href=${`#${p}`} class=${p === current ? 'current' : ''}>${label}</a>`)}</nav>
      <span class="who">
        ${session.readOnly
          ? html`<span class="badge" data-testid="read-only">read-only</span>`
          : session.loggedIn
            ? html`<form method="post" action="./logout"><button type="submit">Log out</button></form>`
            : null}
      </span>
    </header>
    <main>${page}</main>
  `;
}

session = await api('session');
render(html`<${App} />`, document.getElementById('app'));
