import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decide } from '../../src/agent/decide.js';
import { eligibility } from '../../src/agent/election.js';
import { freshMemory } from '../../src/agent/observation.js';
import { planQuorum, quorumVerdict, renderQuorumNames } from '../../src/agent/quorum.js';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { compareLsn } from '../../src/postgres/lsn.js';
import { member, observation, primaryInspection, replicaInspection, storeView } from './observations.js';

const row = (name: string, flushLsn: string, syncState = 'quorum') => ({ member: name, state: 'streaming', syncState, sentLsn: flushLsn, flushLsn, replayLsn: flushLsn, replayLagSeconds: 0 });
const quorumSettings = (k = 1) => ({ ...defaultClusterSettings(), synchronousMode: 'quorum' as const, synchronousCount: k });
const record = (members: string[], quorum: number, revision = 11) => ({ leader: 'a', members, quorum, updatedAt: 'x', revision });
const sync0 = { leader: 'a', members: [], updatedAt: 'x' };
const plan = (opts: { quorum?: ReturnType<typeof record>; ssn: string; rows: ReturnType<typeof row>[]; k?: number; switchLsn?: string }) => {
  const store = storeView({ quorum: opts.quorum, sync: sync0, revisions: { leader: 7, sync: 8, optime: 9, quorum: opts.quorum?.revision } });
  const memory = { ...freshMemory(), syncSwitchLsn: opts.switchLsn };
  return planQuorum(observation({ store, memory, settings: quorumSettings(opts.k) }, 'a'), store, primaryInspection({ synchronousStandbyNames: opts.ssn, replication: opts.rows }));
};
const writes = (p: ReturnType<typeof plan>) => p.actions.filter((a) => a.type === 'writeQuorumRecord').map((a) => a.type === 'writeQuorumRecord' && { members: a.members, quorum: a.quorum });

/** What synchronous_standby_names asks: ANY k of these names. */
function parseAny(text: string): { count: number; names: string[] } | undefined {
  const m = /^ANY (\d+) \((.*)\)$/.exec(text);
  return m ? { count: Number(m[1]), names: m[2]!.split(', ').map((n) => n.replace(/"/g, '')) } : undefined;
}

describe('quorum commit planning: every acknowledged commit stays on at least q members of the recorded list', () => {
  it('renders ANY k over sorted, quoted names, never "*"', () => {
    assert.equal(renderQuorumNames(1, ['c', 'b']), 'ANY 1 ("b", "c")');
    assert.equal(renderQuorumNames(1, []), '');
  });

  it('takes over from the on-mode record, then grows the list before naming the standbys (record write first)', () => {
    const store = storeView({ sync: { leader: 'a', members: ['b'], updatedAt: 'x' } });
    const p = planQuorum(observation({ store, settings: quorumSettings() }, 'a'), store, primaryInspection({ synchronousStandbyNames: 'FIRST 1 ("b")', replication: [row('b', '0/5000000', 'sync'), row('c', '0/5000000', 'async')] }));
    assert.deepEqual(p.actions, [
      { type: 'writeQuorumRecord', members: ['b', 'c'], quorum: 1, revision: null },
      { type: 'writeSyncRecord', members: [], revision: 8 },
    ]);
    assert.equal(p.synchronousStandbyNames, 'ANY 1 ("b", "c")');
    const d = decide(observation({ store, settings: quorumSettings(), server: { kind: 'running', postmasterPid: 2, inspection: primaryInspection({ synchronousStandbyNames: 'FIRST 1 ("b")', replication: [row('b', '0/5000000', 'sync'), row('c', '0/5000000', 'async')] }) }, standbyConfigured: false, previous: { state: 'primary', since: 0 } }, 'a'));
    const types = d.actions.map((a) => a.type);
    assert.ok(types.indexOf('writeQuorumRecord') < types.indexOf('configure'), types.join(', '));
  });

  it('a lost standby: the survivor is named alone at once; the list shrinks only once it flushed past the change', () => {
    const lost = plan({ quorum: record(['b', 'c'], 1), ssn: 'ANY 1 ("b", "c")', rows: [row('c', '0/5000000')] });
    assert.deepEqual(lost.actions, [], 'dropping a name needs no record change: the list keeps b until c caught up');
    assert.equal(lost.synchronousStandbyNames, 'ANY 1 ("c")');
    assert.equal(lost.remember.syncSwitchLsn, undefined);
    const behind = plan({ quorum: record(['b', 'c'], 1), ssn: 'ANY 1 ("c")', rows: [row('c', '0/4FFFFFF')], switchLsn: '0/5000000' });
    assert.deepEqual(behind.actions, []);
    const caughtUp = plan({ quorum: record(['b', 'c'], 1), ssn: 'ANY 1 ("c")', rows: [row('c', '0/5000000')], switchLsn: '0/5000000' });
    assert.deepEqual(writes(caughtUp), [{ members: ['c'], quorum: 1 }]);
  });

  it('k=2 with one standby lost: the quorum is lowered first, then ANY 1 in the same cycle', () => {
    const p = plan({ quorum: record(['b', 'c'], 2), ssn: 'ANY 2 ("b", "c")', rows: [row('c', '0/5000000')], k: 2 });
    assert.deepEqual(writes(p), [{ members: ['b', 'c'], quorum: 1 }]);
    assert.equal(p.synchronousStandbyNames, 'ANY 1 ("c")');
  });

  it('raises the quorum only once k named standbys flushed past the change', () => {
    const one = plan({ quorum: record(['b', 'c'], 1), ssn: 'ANY 2 ("b", "c")', rows: [row('b', '0/5000000'), row('c', '0/4000000')], k: 2, switchLsn: '0/5000000' });
    assert.deepEqual(one.actions, []);
    const both = plan({ quorum: record(['b', 'c'], 1), ssn: 'ANY 2 ("b", "c")', rows: [row('b', '0/5000000'), row('c', '0/5000000')], k: 2, switchLsn: '0/5000000' });
    assert.deepEqual(writes(both), [{ members: ['b', 'c'], quorum: 2 }]);
  });

  it('writes by compare-and-swap against the revision it read', () => {
    const p = plan({ quorum: record(['b'], 1, 42), ssn: 'ANY 1 ("b")', rows: [row('b', '0/5000000'), row('c', '0/5000000', 'async')] });
    assert.deepEqual(p.actions[0], { type: 'writeQuorumRecord', members: ['b', 'c'], quorum: 1, revision: 42 });
  });

  it('property: whatever the state, a setting loaded in a cycle only names listed members and asks at least the recorded quorum', () => {
    const names = ['b', 'c', 'd'];
    let checked = 0;
    for (let mask = 0; mask < 8; mask++) {
      const healthy = names.filter((_, i) => mask & (1 << i));
      for (let recMask = 0; recMask < 8; recMask++) {
        const listed = names.filter((_, i) => recMask & (1 << i));
        for (let q = 0; q <= listed.length; q++) {
          for (const k of [1, 2, 3]) {
            const inEffect = renderQuorumNames(Math.min(q || 1, listed.length), listed);
            const p = plan({ quorum: record(listed, q), ssn: inEffect, rows: healthy.map((n) => row(n, '0/5000000')), k, switchLsn: '0/5000000' });
            const written = p.actions.find((a) => a.type === 'writeQuorumRecord');
            const after = written && written.type === 'writeQuorumRecord' ? { members: written.members, quorum: written.quorum } : { members: listed, quorum: q };
            // Shrinking the list or raising q is only allowed once every named standby flushed past the switch (all rows here did).
            const ssn = parseAny(p.synchronousStandbyNames);
            if (ssn && p.synchronousStandbyNames !== inEffect) {
              assert.ok(ssn.names.every((n) => after.members.includes(n)), `${p.synchronousStandbyNames} names a member outside [${after.members}]`);
              assert.ok(ssn.count >= after.quorum, `${p.synchronousStandbyNames} asks fewer than quorum ${after.quorum}`);
            }
            if (written && written.type === 'writeQuorumRecord' && (after.quorum > q || listed.some((n) => !after.members.includes(n)))) {
              // A shrink/raise: the setting in effect must already be the one it describes.
              assert.equal(p.synchronousStandbyNames, inEffect, 'shrink or raise only while the setting is in effect');
              const current = parseAny(inEffect);
              assert.ok(current && current.names.every((n) => after.members.includes(n)) && current.count >= after.quorum);
            }
            assert.ok(!p.synchronousStandbyNames.includes('*'));
            checked++;
          }
        }
      }
    }
    assert.ok(checked > 100);
  });
});

describe('quorum failover: promote only the most advanced of n - q + 1 members of the last quorum record', () => {
  const rec = { leader: 'a', members: ['b', 'c'], quorum: 1, updatedAt: 'x' };
  it('refuses with fewer than n - q + 1 positions known', () => {
    const v = quorumVerdict(rec, { receivedLsn: '0/6000000', timeline: 1 }, [{ name: 'c', receivedLsn: '0/6000000', timeline: 1 }]);
    assert.equal(v.eligible, false);
    assert.match(v.reason, /1 of the 2 members needed/);
  });
  it('accepts the most advanced of enough members, refuses a less advanced one', () => {
    const w = [{ name: 'b', receivedLsn: '0/7000000', timeline: 1 }, { name: 'c', receivedLsn: '0/6000000', timeline: 1 }];
    assert.equal(quorumVerdict(rec, { receivedLsn: '0/7000000', timeline: 1 }, w).eligible, true);
    const c = quorumVerdict(rec, { receivedLsn: '0/6000000', timeline: 1 }, w);
    assert.equal(c.eligible, false);
    assert.match(c.reason, /b received more/);
  });
  it('q = n: any one member is enough (each holds everything)', () => {
    const all = { ...rec, quorum: 2 };
    assert.equal(quorumVerdict(all, { receivedLsn: '0/6000000', timeline: 1 }, [{ name: 'c', receivedLsn: '0/6000000', timeline: 1 }]).eligible, true);
  });
  it('positions on another timeline do not count', () => {
    const v = quorumVerdict(rec, { receivedLsn: '0/7000000', timeline: 2 }, [{ name: 'b', receivedLsn: '0/7000000', timeline: 1 }, { name: 'c', receivedLsn: '0/6000000', timeline: 2 }]);
    assert.equal(v.eligible, false);
  });
  it('property: the chosen member holds every commit any q of the list hold, for every way the holders can lie', () => {
    // Members b..e, q of them hold each commit; a candidate proven by n-q+1 positions is at least as far as some holder.
    const names = ['b', 'c', 'd', 'e'];
    for (let q = 1; q <= names.length; q++) {
      for (let seed = 0; seed < 200; seed++) {
        const positions = names.map((n, i) => ({ name: n, receivedLsn: `0/${(((seed * 7 + i * 13) % 9) + 1).toString(16)}000000`, timeline: 1 }));
        // The highest commit acknowledged: the q-th highest position (q members hold it).
        const sorted = [...positions].sort((x, y) => compareLsn(y.receivedLsn, x.receivedLsn));
        const acknowledged = sorted[q - 1]!.receivedLsn;
        const r = { leader: 'a', members: names, quorum: q, updatedAt: 'x' };
        for (let drop = 0; drop < names.length; drop++) {
          const reported = positions.filter((_, i) => i !== drop);
          for (const cand of reported) {
            const v = quorumVerdict(r, { receivedLsn: cand.receivedLsn, timeline: 1 }, reported);
            if (v.eligible) assert.ok(compareLsn(cand.receivedLsn, acknowledged) >= 0, `q=${q}: ${cand.name} at ${cand.receivedLsn} lacks ${acknowledged}`);
          }
        }
      }
    }
  });
  it('eligibility uses the last leader\'s quorum record in quorum mode', () => {
    const store = storeView({ leader: undefined, quorum: { ...rec, revision: 3 } });
    const alone = eligibility(quorumSettings(), store, { name: 'c', receivedLsn: '0/6000000', timeline: 1, nofailover: false, priority: 100 }, [{ name: 'c', receivedLsn: '0/6000000', timeline: 1 }]);
    assert.equal(alone.eligible, false, 'b, which may hold commits c lacks, did not answer');
    const d = decide(observation({ store, settings: quorumSettings(), upstreamConfigured: false, server: { kind: 'running', postmasterPid: 2, inspection: replicaInspection({ streaming: false, upstreamConninfo: null, receivedLsn: '0/6000000' }) }, peers: [{ name: 'b', status: undefined, error: 'connection refused' }] }, 'c'));
    assert.equal(d.state, 'electing');
    assert.match(d.reason, /not taking over: quorum record/);
    const withB = decide(observation({ store, settings: quorumSettings(), upstreamConfigured: false, server: { kind: 'running', postmasterPid: 2, inspection: replicaInspection({ streaming: false, upstreamConninfo: null, receivedLsn: '0/6000000' }) }, peers: [{ name: 'b', status: member('b', { streaming: false, receivedLsn: '0/5000000' }) }] }, 'c'));
    assert.equal(withB.state, 'promoting', withB.reason);
    const promote = withB.actions.find((a) => a.type === 'promote');
    assert.ok(promote && promote.type === 'promote');
    assert.deepEqual(promote.quorum, { members: ['b', 'c'], quorum: 1 }, 'the new record covers the provisional standby and the new primary itself (sim quorum-loss seed 160)');
  });
  it('switched from `on` before the leader wrote a quorum record: the election keeps its sync record (sim quorum-loss seed 111)', () => {
    const cand = (name: string, receivedLsn: string) => ({ name, receivedLsn, timeline: 1, nofailover: false, priority: 100 });
    const synced = storeView({ leader: undefined, sync: { leader: 'a', members: ['b'], updatedAt: 'x' } });
    assert.equal(eligibility(quorumSettings(), synced, cand('c', '0/4000000')).eligible, false, 'c is not the synchronous standby and not known to hold as much as b');
    assert.equal(eligibility(quorumSettings(), synced, cand('b', '0/5000000')).eligible, true);
    const changing = storeView({ leader: undefined, sync: { leader: 'a', members: [], previous: ['b', 'c'], updatedAt: 'x' } });
    assert.equal(eligibility(quorumSettings(), changing, cand('c', '0/6000000'), [{ name: 'c', receivedLsn: '0/6000000', timeline: 1 }]).eligible, false, 'b cannot be asked');
  });

  it('switched from `on` while the sync set changed: the quorum record starts from `previous`, q = 1, not from nothing', () => {
    const store = storeView({ sync: { leader: 'a', members: [], previous: ['b', 'c'], updatedAt: 'x' } });
    const p = planQuorum(observation({ store, settings: quorumSettings() }, 'a'), store, primaryInspection({ synchronousStandbyNames: 'FIRST 1 ("c")', replication: [row('c', '0/5000000', 'sync')] }));
    assert.deepEqual(writes(p), [{ members: ['b', 'c'], quorum: 1 }]);
  });

  it('an unreadable quorum record is never taken as absent: no election in quorum mode', () => {
    const store = storeView({ leader: undefined, unreadable: [{ key: '/relevo/test/quorum', kind: 'quorum', revision: 5, problem: 'not JSON', lease: 'none' }] });
    const d = decide(observation({ store, settings: quorumSettings(), upstreamConfigured: false, server: { kind: 'running', postmasterPid: 2, inspection: replicaInspection({ streaming: false, upstreamConninfo: null }) } }, 'c'));
    assert.equal(d.state, 'electing');
    assert.deepEqual(d.actions, []);
    assert.match(d.reason, /not taking over/);
  });
});
