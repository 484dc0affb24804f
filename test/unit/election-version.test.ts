import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decide } from '../../src/agent/decide.js';
import { member, observation, replicaInspection, storeView } from './observations.js';

/** A synchronous standby whose primary's lease is gone: it would take over, unless its major version differs. */
function orphan(version: string, others: { name: string; version: string }[]) {
  return observation({
    upstreamConfigured: false,
    server: { kind: 'running', postmasterPid: 2, inspection: replicaInspection({ streaming: false, upstreamConninfo: null, version }) },
    store: storeView({ leader: undefined, members: others.map((o) => member(o.name, { postgresVersion: o.version, role: o.name === 'a' ? 'primary' : 'replica' })) }),
  });
}

describe('decide: the automatic election never crosses a major version', () => {
  it('a standby of another major version than the last primary is not promoted', () => {
    const d = decide(orphan('16.4', [{ name: 'a', version: '15.18' }, { name: 'c', version: '16.4' }]));
    assert.equal(d.state, 'electing');
    assert.deepEqual(d.actions, []);
    assert.match(d.reason, /major versions is refused/);
    assert.equal(d.retryInMs, undefined, 'not transient: it waits for the loop');
  });

  it('without the last primary\'s record, any other member of another major version blocks it too', () => {
    const d = decide(orphan('16.4', [{ name: 'c', version: '15.18' }]));
    assert.equal(d.state, 'electing');
    assert.match(d.reason, /runs PostgreSQL 16\.4 but c runs 15\.18/);
  });

  it('another minor version of the same major is promoted (a minor update midway)', () => {
    const d = decide(orphan('15.17', [{ name: 'a', version: '15.18' }, { name: 'c', version: '15.18' }]));
    assert.equal(d.state, 'promoting');
    assert.deepEqual(d.actions.map((a) => a.type), ['promote']);
  });
});
