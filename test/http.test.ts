// The HTTP endpoints in process, against a stand-in worker: readiness follows the worker's state,
// liveness follows the event loop, metrics come from the worker's registry. The real daemon's
// endpoints are exercised through the CLI in cli.test.ts.
import { expect } from 'chai';
import http from 'node:http';
import client from 'prom-client';
import { startHttpServer, type HttpServer, type HttpWorker } from '../src/http/server.js';
import { waitFor } from './support/db.js';

class FakeWorker implements HttpWorker {
  state = 'starting';
  listenerConnected = false;
  heartbeatOk = true;
  readonly metrics = { registry: new client.Registry() };
  readonly counter = new client.Counter({ name: 'sluice_jobs_completed_total', help: 'Jobs completed.', labelNames: ['queue', 'task'], registers: [this.metrics.registry] });

  get ready(): boolean {
    return this.state === 'running' && this.listenerConnected && this.heartbeatOk;
  }
  stats() {
    return { listenerConnected: this.listenerConnected };
  }
}

async function get(url: string, method = 'GET'): Promise<{ status: number; type: string | null; body: string }> {
  const res = await fetch(url, { method });
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text() };
}

describe('http endpoints', function () {
  let worker: FakeWorker;
  let server: HttpServer | undefined;

  beforeEach(() => {
    worker = new FakeWorker();
  });
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('binds to port 0 on a free port and returns the real URL', async () => {
    server = await startHttpServer(worker, { host: '127.0.0.1', port: 0 });
    expect(server.port).to.be.greaterThan(0);
    expect(server.url).to.equal(`http://127.0.0.1:${server.port}`);
    expect((await get(`${server.url}/healthz`)).status).to.equal(200);
  });

  it('/readyz is 200 only while running with the listener connected, else 503 with a reason', async () => {
    server = await startHttpServer(worker, { host: '127.0.0.1', port: 0 });
    const readyz = () => get(`${server!.url}/readyz`);

    let r = await readyz();
    expect(r.status).to.equal(503);
    expect(r.type).to.match(/^application\/json/);
    expect(JSON.parse(r.body)).to.deep.equal({ status: 'not ready', reason: 'worker is starting' });

    worker.state = 'running';
    r = await readyz();
    expect(r.status).to.equal(503);
    expect(JSON.parse(r.body).reason).to.match(/LISTEN connection is down/);

    worker.listenerConnected = true;
    r = await readyz();
    expect(r.status).to.equal(200);
    expect(JSON.parse(r.body)).to.deep.equal({ status: 'ready' });

    worker.heartbeatOk = false;
    r = await readyz();
    expect(r.status).to.equal(503);
    expect(JSON.parse(r.body).reason).to.match(/heartbeat/);
    worker.heartbeatOk = true;

    // graceful shutdown: readiness fails first, liveness stays up
    worker.state = 'stopping';
    r = await readyz();
    expect(r.status).to.equal(503);
    expect(JSON.parse(r.body).reason).to.equal('worker is stopping');
    expect((await get(`${server.url}/healthz`)).status).to.equal(200);
  });

  it('/metrics serves the worker registry with the Prometheus content type', async () => {
    server = await startHttpServer(worker, { host: '127.0.0.1', port: 0 });
    worker.counter.inc({ queue: 'default', task: 'hello' }, 3);
    const r = await get(`${server.url}/metrics`);
    expect(r.status).to.equal(200);
    expect(r.type).to.equal(worker.metrics.registry.contentType);
    expect(r.body).to.include('sluice_jobs_completed_total{queue="default",task="hello"} 3');
  });

  it('/healthz reports the event loop, and fails only while it is stuck longer than the limit', async () => {
    server = await startHttpServer(worker, { host: '127.0.0.1', port: 0, stallAfterMs: 400, tickMs: 250 });
    let r = await get(`${server.url}/healthz`);
    expect(r.status).to.equal(200);
    const body = JSON.parse(r.body);
    expect(body.status).to.equal('ok');
    expect(body.eventLoopDelayMs).to.have.keys('p50', 'p99', 'max');

    // block the event loop well past the limit: the first probe after it says "restart me"
    const until = Date.now() + 1200;
    while (Date.now() < until) {
      // busy
    }
    r = await get(`${server.url}/healthz`);
    expect(r.status).to.equal(503);
    expect(JSON.parse(r.body).reason).to.match(/^event loop stuck for \d+ ms$/);

    // and it recovers once the loop turns normally again
    await waitFor('/healthz to be 200 again', async () => (await get(`${server!.url}/healthz`)).status === 200, 10_000);
  });

  it('answers HEAD, refuses other methods and unknown paths', async () => {
    server = await startHttpServer(worker, { host: '127.0.0.1', port: 0 });
    const head = await get(`${server.url}/healthz`, 'HEAD');
    expect(head.status).to.equal(200);
    expect(head.body).to.equal('');
    const post = await get(`${server.url}/metrics`, 'POST');
    expect(post.status).to.equal(405);
    const missing = await get(`${server.url}/nope`);
    expect(missing.status).to.equal(404);
    expect(JSON.parse(missing.body).endpoints).to.deep.equal(['/healthz', '/readyz', '/metrics']);
  });

  it('close() does not wait for idle keep-alive connections', async () => {
    // kept open far longer than the test may take: close() must end it, not wait for it
    server = await startHttpServer(worker, { host: '127.0.0.1', port: 0, keepAliveMs: 600_000 });
    const agent = new http.Agent({ keepAlive: true });
    await new Promise<void>((resolve, reject) => {
      http.get(`${server!.url}/healthz`, { agent }, (res) => {
        res.resume();
        res.on('end', resolve);
      }).on('error', reject);
    });
    const socket = Object.values(agent.freeSockets).flat()[0]!;
    expect(socket, 'an idle keep-alive connection').to.exist;
    let closedByServer = false;
    socket.once('close', () => (closedByServer = true));
    await server.close();
    server = undefined;
    await waitFor('the idle connection to be closed by the server', () => closedByServer, 10_000);
    agent.destroy();
  });

  it('names the key to change when the port is taken', async () => {
    server = await startHttpServer(worker, { host: '127.0.0.1', port: 0 });
    let error: Error | undefined;
    try {
      const second = await startHttpServer(worker, { host: '127.0.0.1', port: server.port });
      await second.close();
    } catch (err) {
      error = err as Error;
    }
    expect(error?.message).to.match(/^http\.port: 127\.0\.0\.1:\d+ is already in use/);
  });
});
