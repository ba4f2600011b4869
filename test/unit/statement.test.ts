import { expect } from 'chai';
import { bindParameters, Statement } from '../../src/db/statement.js';
import { loadQueries } from '../../src/db/queries.js';

describe('statements with named parameters', () => {
  it('numbers each name once, in order of first use, and leaves casts alone', () => {
    expect(bindParameters('SELECT :a::int, :b_c, :a')).to.deep.equal({ text: 'SELECT $1::int, $2, $1', names: ['a', 'b_c'] });
  });

  it('leaves strings, quoted names, comments and dollar-quoted bodies untouched', () => {
    const sql = `SELECT ':x', E'\\':y', "a:b", $$ :z $$ -- :w\n/* :v */ , :real`;
    const bound = bindParameters(sql);
    expect(bound.names).to.deep.equal(['real']);
    expect(bound.text).to.equal(`SELECT ':x', E'\\':y', "a:b", $$ :z $$ -- :w\n/* :v */ , $1`);
  });

  it('writes literal parameters into the text, one prepared statement per value', () => {
    const s = new Statement<{ limit: number; q: string }>('s.claim', 'SELECT :q LIMIT :limit', { prepared: true, literals: ['limit'] });
    expect(s.config({ q: 'a', limit: 5 })).to.deep.equal({ name: 's.claim_5', text: 'SELECT $1 LIMIT 5', values: ['a'] });
    expect(s.config({ q: 'b', limit: 7 }).name).to.equal('s.claim_7');
    expect(() => s.config({ q: 'a', limit: 1.5 })).to.throw(/literal limit must be an integer/);
  });

  it('takes parameters by camelCase name and names a missing one', () => {
    const s = new Statement<{ workerId: string }>('s.hb', 'UPDATE w SET at = now() WHERE id = :worker_id', { prepared: true });
    expect(s.config({ workerId: 'w1' })).to.deep.equal({ name: 's.hb', text: 'UPDATE w SET at = now() WHERE id = $1', values: ['w1'] });
    expect(() => s.config({} as { workerId: string })).to.throw(/needs the parameter workerId/);
  });

  it('names no prepared statement at all when they are switched off', () => {
    const q = loadQueries('sluice', { preparedStatements: false });
    for (const [name, statement] of Object.entries(q)) {
      const params = Object.fromEntries(statement.params.map((p) => [p, 1]));
      expect(statement.config({ ...params, limit: 5 } as never), name).to.not.have.property('name');
    }
    expect(loadQueries('sluice').claim_jobs.config({ queues: ['a'], limits: [5], windowsMs: [0], tasks: ['t'], workerId: 'w' }).name).to.equal('sluice.claim_jobs');
  });
});
