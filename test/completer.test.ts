import { expect } from 'chai';
import pg from 'pg';
import { loadQueries } from '../src/db/queries.js';
import { Completer } from '../src/runner/completer.js';
import type { ClaimedJob } from '../src/runner/claim.js';
import { silentLogger } from '../src/observe/logger.js';

describe('completer at shutdown', () => {
  const job = (id: string): ClaimedJob => ({
    id, queue: 'default', task: 't', payload: {}, priority: 0, runAt: new Date(), attempt: 1, maxAttempts: 25, token: '1', jobKey: null, createdAt: new Date(),
  });

  it('settles outcomes it could not write when drained, and any that arrive afterwards', async () => {
    // nothing listens on port 1: every write fails and is retried until the drain gives up
    const pool = new pg.Pool({ connectionString: 'postgres://nobody@127.0.0.1:1/none', max: 1, connectionTimeoutMillis: 1000 });
    pool.on('error', () => undefined);
    const completer = new Completer(pool, loadQueries('sluice'), silentLogger());
    try {
      const waiting = [completer.complete(job('1'), undefined), completer.fail(job('2'), 'boom', true, 10)];
      await completer.drain(300);
      expect(await Promise.all(waiting)).to.deep.equal([
        { applied: false, reason: 'shutdown' },
        { applied: false, reason: 'shutdown' },
      ]);
      expect(await completer.complete(job('3'), '{}')).to.deep.equal({ applied: false, reason: 'shutdown' });
      expect(completer.backlog).to.equal(0);
    } finally {
      await pool.end();
    }
  });
});
