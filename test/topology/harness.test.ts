// Smoke tests of the topology harnesses against the real engines: each proves its harness builds
// the topology it claims (streaming standby, pgbouncer in transaction mode, Patroni with failover),
// so that tests of sluice on those topologies can trust them. Skipped, with the reason printed,
// when a tool is not installed; SLUICE_TEST_REQUIRE_TOOLS=1 makes that a failure.
import { expect } from 'chai';
import path from 'node:path';
import pg from 'pg';
import type { LocalCluster } from '../../src/embedded/cluster.js';
import { destroyCluster, startCluster, waitFor } from '../support/db.js';
import { faultsEnabled } from '../support/faults.js';
import { startPatroniCluster, type PatroniCluster } from '../support/patroni.js';
import { startPgBouncer, type PgBouncer } from '../support/pgbouncer.js';
import { inRecovery, queryOnce, startStandbyPair, type StandbyPair } from '../support/standby.js';
import { ETCD_BIN, PATRONI_BIN, PG15_BIN_DIR, PGBOUNCER_BIN, requireTool } from '../support/tools.js';

/** The payloads of the notifications on `channel` that `client` receives from now on. */
function notifications(client: pg.Client, channel: string): string[] {
  const payloads: string[] = [];
  client.on('notification', (msg) => {
    if (msg.channel === channel) payloads.push(msg.payload ?? '');
  });
  return payloads;
}

async function connected(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

describe('topology harness: primary and streaming standby (PostgreSQL 15)', function () {
  this.timeout(120_000);
  let pair: StandbyPair | undefined;

  before(async function () {
    if (!faultsEnabled()) this.skip();
    requireTool(this, 'pg_basebackup', path.join(PG15_BIN_DIR, 'pg_basebackup'));
    pair = await startStandbyPair();
  });
  after(async () => {
    await pair?.destroy();
  });

  it('streams a row written on the primary to the standby', async () => {
    const { primary, standby } = pair!;
    await queryOnce(primary.url(), 'CREATE TABLE harness (id int PRIMARY KEY)');
    await queryOnce(primary.url(), 'INSERT INTO harness VALUES (1)');
    await waitFor('the row on the standby', async () =>
      (await queryOnce(standby.url(), 'SELECT id FROM harness')).length === 1);
    expect(await inRecovery(standby.url())).to.equal(true);
  });

  it('refuses LISTEN on the standby', async () => {
    const err = await queryOnce(pair!.standby.url(), 'LISTEN harness').catch((e: Error) => e);
    expect(err).to.be.instanceOf(Error);
    expect((err as Error).message).to.equal('cannot execute LISTEN during recovery');
  });

  it('after promote(), the former standby takes writes and LISTEN', async () => {
    const { standby } = pair!;
    await pair!.promote();
    expect(await inRecovery(standby.url())).to.equal(false);
    await queryOnce(standby.url(), 'INSERT INTO harness VALUES (2)');
    const listener = await connected(standby.url());
    try {
      await listener.query('LISTEN harness');
      const received = notifications(listener, 'harness');
      await queryOnce(standby.url(), "SELECT pg_notify('harness', 'promoted')");
      await waitFor('the notification on the promoted standby', () => received.includes('promoted'));
    } finally {
      await listener.end();
    }
  });
});

describe('topology harness: pgbouncer 1.18 in transaction mode', function () {
  this.timeout(60_000);
  let cluster: LocalCluster | undefined;
  let bouncer: PgBouncer | undefined;
  const clients: pg.Client[] = [];
  const pools: pg.Pool[] = [];

  const client = async () => {
    const c = await connected(bouncer!.url());
    clients.push(c);
    return c;
  };
  const pool = (max: number) => {
    const p = new pg.Pool({ connectionString: bouncer!.url(), max });
    p.on('error', () => undefined); // idle clients cut by a restart
    pools.push(p);
    return p;
  };

  before(async function () {
    if (!faultsEnabled()) this.skip();
    requireTool(this, 'pgbouncer', PGBOUNCER_BIN);
    cluster = await startCluster();
    bouncer = await startPgBouncer({ targetPort: cluster.port, defaultPoolSize: 1, maxClientConn: 50 });
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.end().catch(() => undefined)));
    await Promise.all(pools.splice(0).map((p) => p.end().catch(() => undefined)));
  });
  after(async () => {
    await bouncer?.destroy();
    if (cluster) await destroyCluster(cluster);
  });

  it('runs the queries of a node-postgres Pool, in transaction pool mode', async () => {
    const p = pool(4);
    const rows = await Promise.all([1, 2, 3, 4, 5, 6, 7, 8].map(async (n) => (await p.query('SELECT $1::int AS n', [n])).rows[0].n));
    expect(rows).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8]);
    const pools = await queryOnce<{ database: string; pool_mode: string }>(bouncer!.adminUrl(), 'SHOW POOLS');
    expect(pools.find((r) => r.database === 'postgres')?.pool_mode).to.equal('transaction');
  });

  it('serves the transactions of two clients on one server connection at default_pool_size=1', async () => {
    const [a, b] = [await client(), await client()];
    const backendOf = async (c: pg.Client) => {
      await c.query('BEGIN');
      const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
      await c.query('COMMIT');
      return pid;
    };
    const first = await backendOf(a);
    expect(await backendOf(b)).to.equal(first);
    expect(await backendOf(a)).to.equal(first);
  });

  it('shares named prepared statements between clients (1.18 does not track them); unnamed ones work', async () => {
    const [a, b] = [await client(), await client()];
    await a.query({ name: 'harness_q', text: 'SELECT $1::int AS n', values: [1] });
    // b never prepared harness_q, but its one server connection already holds a's
    const err = await b.query({ name: 'harness_q', text: 'SELECT $1::int AS n', values: [2] }).catch((e: pg.DatabaseError) => e);
    expect(err).to.be.instanceOf(Error);
    expect((err as pg.DatabaseError).code).to.equal('42P05');
    expect((err as Error).message).to.equal('prepared statement "harness_q" already exists');
    expect((await b.query('SELECT $1::text AS t', ['unnamed'])).rows[0].t).to.equal('unnamed');
  });

  it('passes NOTIFY through to a listener on the server', async () => {
    const listener = await connected(cluster!.url());
    try {
      await listener.query('LISTEN harness');
      const received = notifications(listener, 'harness');
      await (await client()).query("NOTIFY harness, 'through pgbouncer'");
      await waitFor('the notification sent through pgbouncer', () => received.includes('through pgbouncer'));
    } finally {
      await listener.end();
    }
  });

  it('restart(): a Pool recovers once its broken clients are destroyed', async () => {
    const p = pool(2);
    const held = await p.connect();
    held.on('error', () => undefined); // a checked-out client's cut is reported here, not by the pool
    await p.query('SELECT 1'); // a second client, left idle in the pool
    await bouncer!.restart();
    const err = await held.query('SELECT 1').catch((e: Error) => e);
    expect(err).to.be.instanceOf(Error);
    held.release(err as Error); // a broken client must be destroyed, not returned to the pool
    await waitFor('the pool to run a query through the restarted pgbouncer', async () =>
      (await p.query('SELECT 1 AS one')).rows[0].one === 1, 20_000, 100);
    expect(p.totalCount).to.be.at.most(2);
  });
});

describe('topology harness: Patroni 3.0 with etcd, two nodes', function () {
  this.timeout(180_000);
  let cluster: PatroniCluster | undefined;

  before(async function () {
    if (!faultsEnabled()) this.skip();
    requireTool(this, 'patroni', PATRONI_BIN);
    requireTool(this, 'etcd', ETCD_BIN);
    requireTool(this, 'pg_basebackup', path.join(PG15_BIN_DIR, 'pg_basebackup'));
    cluster = await startPatroniCluster({ nodes: 2 });
  });
  after(async () => {
    await cluster?.destroy();
  });

  it('starts with one leader and one streaming replica', async () => {
    const members = await cluster!.members();
    expect(members.map((m) => m.role).sort()).to.deep.equal(['leader', 'replica']);
    const [leader, [replica]] = [await cluster!.leader(), await cluster!.replicas()];
    expect(await inRecovery(leader!.url())).to.equal(false);
    expect(await inRecovery(replica.url())).to.equal(true);
    expect(cluster!.multiHostUrl()).to.equal(`postgres://postgres@${cluster!.nodes.map((n) => `127.0.0.1:${n.pgPort}`).join(',')}/postgres`);
  });

  it('streams a write on the leader to the replica', async () => {
    const [leader, [replica]] = [(await cluster!.leader())!, await cluster!.replicas()];
    await queryOnce(leader.url(), 'CREATE TABLE harness (id int PRIMARY KEY)');
    await queryOnce(leader.url(), 'INSERT INTO harness VALUES (1)');
    await waitFor('the row on the replica', async () => (await queryOnce(replica.url(), 'SELECT id FROM harness')).length === 1);
  });

  it('switchover() moves the leader to the replica', async () => {
    const [oldLeader, [replica]] = [(await cluster!.leader())!, await cluster!.replicas()];
    const newLeader = await cluster!.switchover();
    expect(newLeader).to.equal(replica);
    expect(await inRecovery(newLeader.url())).to.equal(false);
    await cluster!.waitForReplicas(90_000);
    expect(await inRecovery(oldLeader.url())).to.equal(true);
  });

  it('killLeader(): the replica is promoted; restartNode() brings the killed node back as a replica', async () => {
    const started = Date.now();
    const killed = await cluster!.killLeader();
    const promoted = await cluster!.waitForLeader(killed, 90_000);
    console.log(`      failover: ${promoted.name} took writes ${((Date.now() - started) / 1000).toFixed(1)} s after ${killed.name} was killed`);
    await queryOnce(promoted.url(), 'INSERT INTO harness VALUES (2)');

    const restarted = Date.now();
    await cluster!.restartNode(killed);
    console.log(`      rejoin: ${killed.name} streamed as a replica ${((Date.now() - restarted) / 1000).toFixed(1)} s after its restart`);
    expect(await inRecovery(killed.url())).to.equal(true);
    await waitFor('the write made after the failover on the rejoined node', async () =>
      (await queryOnce(killed.url(), 'SELECT id FROM harness WHERE id = 2')).length === 1);
  });
});
