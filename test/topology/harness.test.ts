// Smoke tests of the topology harnesses against the real engines: each proves its harness builds
// the topology it claims (streaming standby, pgbouncer in transaction mode, Patroni with failover),
// so that tests of sluice on those topologies can trust them. Skipped, with the reason printed,
// when a tool is not installed; SLUICE_TEST_REQUIRE_TOOLS=1 makes that a failure.
import { expect } from 'chai';
import path from 'node:path';
import pg from 'pg';
import { waitFor } from '../support/db.js';
import { faultsEnabled } from '../support/faults.js';
import { inRecovery, queryOnce, startStandbyPair, type StandbyPair } from '../support/standby.js';
import { PG15_BIN_DIR, requireTool } from '../support/tools.js';

/** Resolves with the payload of the first notification on `channel` received by `client`. */
function nextNotification(client: pg.Client, channel: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const onNotification = (msg: pg.Notification) => {
      if (msg.channel !== channel) return;
      client.off('notification', onNotification);
      resolve(msg.payload);
    };
    client.on('notification', onNotification);
  });
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
      const received = nextNotification(listener, 'harness');
      await queryOnce(standby.url(), "SELECT pg_notify('harness', 'promoted')");
      expect(await received).to.equal('promoted');
    } finally {
      await listener.end();
    }
  });
});
