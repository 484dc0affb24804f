import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decide } from '../../src/agent/decide.js';
import { failsafeReplicaHold, givenAfterRead, holdDeadline, mayConfirm, membershipAfterRead } from '../../src/agent/failsafe.js';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { observation, primaryInspection, storeView } from './observations.js';

const settings = { ...defaultClusterSettings(), failsafe: true };
const limit = settings.ttlMs - settings.fenceMarginMs;

describe('store failsafe rules', () => {
  it('the hold lasts until the oldest of every member\'s latest confirmation + ttlMs - fenceMarginMs; a member never confirmed means no hold', () => {
    assert.equal(holdDeadline(settings, ['b', 'c'], new Map([['b', 1_000], ['c', 2_000]])), 1_000 + limit);
    assert.equal(holdDeadline(settings, ['b', 'c'], new Map([['b', 1_000]])), undefined);
    assert.equal(holdDeadline(settings, [], new Map()), undefined, 'nobody to vouch: no failsafe');
  });

  it('a primary without the store stays primary while the hold lasts, and fences as before once it lapsed', () => {
    const base = {
      settings,
      server: { kind: 'running' as const, postmasterPid: 2, inspection: primaryInspection() },
      standbyConfigured: false,
      store: { reachable: false as const, error: 'timeout' },
      leaseRenewedAt: 100_000 - limit - 1,
      previous: { state: 'primary' as const, since: 0 },
    };
    const held = decide(observation({ ...base, failsafe: { heldUntil: 100_001, members: ['b', 'c'], confirmed: undefined } }, 'a'));
    // Still the store-unreachable state (anything may follow it once the store answers), with the reason saying failsafe holds.
    assert.equal(held.state, 'primary_store_unreachable');
    assert.deepEqual(held.actions, []);
    assert.match(held.reason, /failsafe active/);
    const lapsed = decide(observation({ ...base, failsafe: { heldUntil: 100_000, members: ['b', 'c'], confirmed: undefined } }, 'a'));
    assert.equal(lapsed.state, 'fencing_store_lost');
    const off = decide(observation({ ...base, settings: defaultClusterSettings(), failsafe: { heldUntil: 200_000, members: ['b'], confirmed: undefined } }, 'a'));
    assert.equal(off.state, 'fencing_store_lost', 'failsafe off in the settings: no hold');
  });

  it('a confirmation survives store reads that still name the confirmed primary, and goes once another member leads', () => {
    const given = { leader: 'a', at: 1_000 };
    assert.equal(givenAfterRead(given, 'a'), given, 'the lease of a may still lapse in the store: the promise holds');
    assert.equal(givenAfterRead(given, undefined), given);
    assert.equal(givenAfterRead(given, 'b'), undefined, 'b leads through the store: nothing left to promise');
  });

  it('a replica that confirmed does not take over within ttlMs of its confirmation, even with no leader in the store', () => {
    const noLeader = storeView({ leader: undefined });
    const base = { settings, store: noLeader, upstreamConfigured: true };
    const held = decide(observation({ ...base, failsafe: { heldUntil: undefined, members: [], confirmed: { leader: 'a', at: 100_000 - 1_000 } } }));
    assert.equal(held.state, 'replica');
    assert.deepEqual(held.actions, [], 'keeps streaming from the primary it vouched for');
    assert.match(held.reason, /confirmed failsafe to primary a/);
    const later = decide(observation({ ...base, failsafe: { heldUntil: undefined, members: [], confirmed: { leader: 'a', at: 100_000 - settings.ttlMs } } }));
    assert.deepEqual(later.actions.map((a) => a.type), ['detachUpstream'], 'once it lapsed: the usual election');
    assert.equal(failsafeReplicaHold(observation({ settings })), undefined);
  });

  it('confirms only the primary it last saw, never as a primary itself, never with failsafe off', () => {
    const replica = { name: 'b', role: 'replica', state: 'replica' };
    assert.deepEqual(mayConfirm(settings, replica, 'a', 'a'), { ok: true });
    assert.equal(mayConfirm(settings, replica, 'c', 'a').ok, false);
    assert.equal(mayConfirm(settings, { name: 'b', role: 'primary', state: 'primary' }, 'a', 'a').ok, false);
    assert.equal(mayConfirm(settings, { name: 'b', role: 'replica', state: 'promoting' }, 'a', 'a').ok, false);
    assert.equal(mayConfirm(defaultClusterSettings(), replica, 'a', 'a').ok, false);
    assert.equal(mayConfirm(settings, replica, 'b', 'b').ok, false);
  });

  it('after a store read naming no leader (leases revoked on waking), a member still bound by its promise to the primary confirms it again; not another', () => {
    const self = { name: 'b', role: 'replica', state: 'replica' };
    assert.deepEqual(mayConfirm(settings, self, undefined, 'a', 'a'), { ok: true });
    assert.equal(mayConfirm(settings, self, undefined, 'a', undefined).ok, false);
    assert.equal(mayConfirm(settings, self, undefined, 'c', 'a').ok, false);
    assert.equal(mayConfirm(settings, self, 'c', 'a', 'a').ok, false, 'the store names another leader: no');
  });

  it('while the primary holds failsafe its membership only grows: a member whose key vanished with a revoked lease must still confirm', () => {
    const b = { name: 'b', apiUrl: 'https://b' };
    const c = { name: 'c', apiUrl: 'https://c' };
    const d = { name: 'd', apiUrl: 'https://d' };
    assert.deepEqual(membershipAfterRead([b, c], [], true), [b, c]);
    assert.deepEqual(membershipAfterRead([b, c], [c, d], true), [c, d, b]);
    assert.deepEqual(membershipAfterRead([b, c], [c], false), [c]);
  });
});
