import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { grantAnswer } from '../../src/agent/failsafe.js';
import type { LeaderRecord, MemberStatus } from '../../src/cluster/types.js';
import {
  afterProbe,
  afterRead,
  afterStaleness,
  grantInForce,
  NO_OUTAGE,
  nextGrant,
  probeDue,
  type FailsafeAnswer,
  type ProbeOutcome,
  type RouterFailsafe,
} from '../../src/router/failsafe.js';
import { pickReadWrite, routedPrimary, type ViewInput } from '../../src/router/view.js';
import { member as fixture } from './observations.js';

const TTL = 6_000;
const active = (remainingMs: number, member = 'a'): FailsafeAnswer => ({ member, active: true, remainingMs, reason: 'held' });
const answer = (a: FailsafeAnswer, sentAt = 1_000, member = 'a'): ProbeOutcome => ({ kind: 'answer', member, address: '10.0.0.1:5432', answer: a, sentAt });
const grant = (member: string, until: number) => ({ member, until, address: `10.0.0.${member.charCodeAt(0) - 96}:5432` });
const noAnswer: ProbeOutcome = { kind: 'no-answer', member: 'a', error: 'timeout' };

describe('router failsafe: the grant', () => {
  it('counts from when the question was sent, for the hold the agent had left, never beyond ttlMs', () => {
    assert.deepEqual(nextGrant(undefined, answer(active(3_500)), TTL).grant, grant('a', 4_500));
    assert.deepEqual(nextGrant(undefined, answer(active(60_000)), TTL).grant, grant('a', 1_000 + TTL));
  });

  it('ends at once when the agent says it is not primary under failsafe, or another member answers', () => {
    const held = grant('a', 5_000);
    const ended = nextGrant(held, answer({ member: 'a', active: false, remainingMs: 0, reason: 'failsafe ended: b: timeout' }), TTL);
    assert.equal(ended.grant, undefined);
    assert.match(ended.reason, /a is not primary under failsafe: failsafe ended: b: timeout/);
    assert.equal(nextGrant(held, answer(active(3_000, 'b')), TTL).grant, undefined);
    assert.equal(nextGrant(held, answer(active(0)), TTL).grant, undefined, 'a hold with nothing left');
    assert.equal(nextGrant(held, answer(active(Number.NaN)), TTL).grant, undefined);
  });

  it('without an answer the grant of that member runs out; none is made', () => {
    const held = grant('a', 5_000);
    assert.deepEqual(nextGrant(held, noAnswer, TTL).grant, held);
    assert.equal(nextGrant(grant('b', 5_000), noAnswer, TTL).grant, undefined);
    assert.equal(nextGrant(undefined, noAnswer, TTL).grant, undefined);
  });
});

describe('router failsafe: the outage', () => {
  const granted: RouterFailsafe = { grant: grant('a', 9_000), outage: true, answeredAt: undefined };

  it('a failed read or a stale view starts an outage; the grant is in force only during one', () => {
    const failed = afterRead({ ...NO_OUTAGE, grant: granted.grant }, { ok: false });
    assert.equal(failed.outage, true);
    assert.deepEqual(grantInForce(failed, 'b'), granted.grant, 'during the outage, whatever a watch event said');
    assert.equal(grantInForce({ ...failed, outage: false }, 'a'), undefined);
    assert.equal(grantInForce({ ...failed, outage: false }, 'b'), undefined);
    assert.deepEqual(grantInForce({ ...failed, outage: false }, undefined), granted.grant, 'after it, while the store names no leader');
    assert.equal(afterStaleness(NO_OUTAGE, true).outage, true);
    assert.equal(afterStaleness(NO_OUTAGE, false).outage, false);
  });

  it('the first read that succeeds keeps the grant; a fresh read begun after it ends the outage and the store decides', () => {
    // The read that succeeds first may have begun during the outage: the store has not been re-read since it woke.
    const answered = afterRead(granted, { ok: true, startedAt: 2_000, at: 7_000, stale: false, leader: 'a' });
    assert.equal(answered.answeredAt, 7_000);
    assert.deepEqual(grantInForce(answered, 'a'), granted.grant);
    // Begun before that answer: still not the re-read.
    assert.deepEqual(afterRead(answered, { ok: true, startedAt: 6_900, at: 7_010, stale: false, leader: 'a' }), answered);
    // The re-read ends the outage; the grant is kept (to run out) unless the store names another leader.
    const over = afterRead(answered, { ok: true, startedAt: 7_001, at: 7_010, stale: false, leader: 'a' });
    assert.deepEqual(over, { ...NO_OUTAGE, grant: granted.grant });
    assert.equal(grantInForce(over, 'a'), undefined, 'the store names the primary: it decides');
    assert.deepEqual(grantInForce(over, undefined), granted.grant, 'its lease revoked on waking: writes still go to the granted primary');
    assert.deepEqual(afterRead(answered, { ok: true, startedAt: 7_001, at: 7_010, stale: false, leader: 'b' }), NO_OUTAGE);
    assert.deepEqual(afterRead(over, { ok: true, startedAt: 8_000, at: 8_010, stale: false, leader: 'b' }), NO_OUTAGE);
    // The re-read fails: the outage goes on, and so does asking.
    const again = afterRead(answered, { ok: false });
    assert.equal(again.answeredAt, undefined);
    assert.equal(probeDue(again, { now: 8_000, lastReadAt: 7_001, afterMs: 2_000 }), true);
  });

  it('a read that hangs and returns stale is the start of an outage, not its end', () => {
    const late = afterRead({ ...NO_OUTAGE, grant: granted.grant }, { ok: true, startedAt: 0, at: 7_000, stale: true, leader: 'a' });
    assert.equal(late.outage, true);
    assert.equal(late.answeredAt, 7_000);
    assert.deepEqual(grantInForce(late, 'a'), granted.grant);
  });

  it('asks ahead of staleness and during the outage, and stops asking once the store answers', () => {
    assert.equal(probeDue(NO_OUTAGE, { now: 10_000, lastReadAt: 9_000, afterMs: 2_000 }), false);
    assert.equal(probeDue(NO_OUTAGE, { now: 12_000, lastReadAt: 9_000, afterMs: 2_000 }), true);
    assert.equal(probeDue(granted, { now: 9_500, lastReadAt: 9_000, afterMs: 2_000 }), true);
    assert.equal(probeDue({ ...granted, answeredAt: 9_400 }, { now: 20_000, lastReadAt: 0, afterMs: 2_000 }), false);
  });

  it('once the store answers, a late "not active" (the agent renewed its lease) does not end the grant before the re-read', () => {
    const answered = { ...granted, answeredAt: 7_000 };
    const late = afterProbe(answered, answer({ member: 'a', active: false, remainingMs: 0, reason: 'failsafe is not active' }), TTL);
    assert.deepEqual(late.state, answered);
    const during = afterProbe(granted, answer({ member: 'a', active: false, remainingMs: 0, reason: 'failsafe ended' }), TTL);
    assert.equal(during.state.grant, undefined);
  });
});

describe('router failsafe: where writes go', () => {
  const statusOf = (name: string, over: Partial<MemberStatus> = {}) => fixture(name, { connectAddress: `10.0.0.${name.charCodeAt(0) - 96}:5432`, tags: {}, ...over });
  const leader: LeaderRecord = { member: 'a', ttlMs: TTL, acquiredAt: '2024-01-01T00:00:00Z' };
  const members = new Map([['a', statusOf('a', { role: 'primary', upstream: null })], ['b', statusOf('b')]]);
  const settings = { maxLagBytes: null, maxLagSeconds: null, fallbackToPrimary: false, requireStreaming: false, defaultTtlMs: TTL };
  const NOW = 100_000;
  const stale = (over: Partial<ViewInput> = {}): ViewInput => ({ snapshot: { leader, members, failover: undefined }, settings, now: NOW, lastStoreReadAt: NOW - TTL - 1, connections: new Map(), ...over });

  it('a stale view refuses writes without a grant, and routes them to the granted primary with one', () => {
    assert.equal(pickReadWrite(stale()).action, 'refuse');
    assert.deepEqual(routedPrimary(stale()), { member: undefined, failsafe: false });
    const withGrant = stale({ failsafe: grant('a', NOW + 1) });
    assert.deepEqual(pickReadWrite(withGrant), { action: 'route', primary: true, backend: { member: 'a', address: '10.0.0.1:5432', host: '10.0.0.1', port: 5432 } });
    assert.deepEqual(routedPrimary(withGrant), { member: 'a', failsafe: true });
  });

  it('never beyond the grant, and never to a member whose last status is not primary', () => {
    assert.equal(pickReadWrite(stale({ failsafe: grant('a', NOW) })).action, 'refuse');
    assert.equal(pickReadWrite(stale({ failsafe: grant('b', NOW + 1_000) })).action, 'refuse');
  });

  it('a store without the leader key, or even its member key (a revoked lease), does not move writes away from the granted primary', () => {
    const noLeader = stale({ snapshot: { leader: undefined, members, failover: undefined }, lastStoreReadAt: NOW - 100, failsafe: grant('a', NOW + 1_000) });
    assert.deepEqual(routedPrimary(noLeader), { member: 'a', failsafe: true });
    assert.equal(pickReadWrite(noLeader).action, 'route');
    const nothing = stale({ snapshot: { leader: undefined, members: new Map(), failover: undefined }, lastStoreReadAt: NOW - 100, failsafe: grant('a', NOW + 1_000) });
    assert.deepEqual(pickReadWrite(nothing), { action: 'route', primary: true, backend: { member: 'a', address: '10.0.0.1:5432', host: '10.0.0.1', port: 5432 } });
  });

  it('a switchover under way when the store went: no routing on the grant', () => {
    const switching = stale({ snapshot: { leader, members, failover: { kind: 'switchover', from: 'a', to: 'b', requestedAt: '2024-01-01T00:00:00Z' } }, failsafe: grant('a', NOW + 1_000) });
    assert.equal(pickReadWrite(switching).action, 'refuse');
  });
});

describe('agent: GET /failsafe answer', () => {
  const base = { runsAsPrimary: true, active: true, heldUntil: 5_000, ended: undefined };
  it('active with the hold left only for a primary whose every member confirmed', () => {
    assert.deepEqual(grantAnswer('a', base, 1_000), { member: 'a', active: true, remainingMs: 4_000, reason: 'every member confirmed this primary; the hold lasts 4000 ms more' });
    assert.equal(grantAnswer('a', { ...base, runsAsPrimary: false }, 1_000).active, false);
    assert.match(grantAnswer('a', { ...base, ended: 'b: timeout' }, 1_000).reason, /failsafe ended: b: timeout/);
    assert.equal(grantAnswer('a', { ...base, active: false }, 1_000).active, false);
    assert.equal(grantAnswer('a', { ...base, heldUntil: undefined }, 1_000).active, false);
    assert.deepEqual(grantAnswer('a', base, 5_000), { member: 'a', active: false, remainingMs: 0, reason: 'the failsafe hold has lapsed' });
  });
});
