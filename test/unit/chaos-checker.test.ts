import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { check, longestGap, overlappingAcks, pickReadBack, staleReads, windowOf, type FaultRecord } from '../chaos/checker.js';
import { FAULT_KINDS, FAULT_TEXT, rng } from '../chaos/faults.js';
import { verdictMarkdown } from '../chaos/report.js';
import type { RunResult } from '../chaos/run.js';
import type { Ack } from '../helpers/writer.js';

const ack = (id: number, server: string, timeline: number, sentAt: number, ackedAt = sentAt + 5, lsn = `0/${(id * 100).toString(16)}`): Ack => ({ id, server, timeline, sentAt, ackedAt, lsn });

const fault = (index: number, at: number, mode: 'sync' | 'async', convergedAt: number | null = at + 1_000): FaultRecord => ({
  index,
  kind: 'isolate-primary',
  mode,
  target: 'node1',
  detail: '',
  primaryBefore: 'node1',
  at,
  healedAt: at + 500,
  convergedAt,
  primaryAfter: 'node2',
});

describe('chaos checker', () => {
  it('an old primary acknowledging after the new one did is an overlap; a clean handover is not', () => {
    const clean = [ack(1, 'node1', 1, 0), ack(2, 'node1', 1, 10), ack(3, 'node2', 2, 100), ack(4, 'node2', 2, 110)];
    assert.deepEqual(overlappingAcks(clean), []);
    const split = [...clean, ack(5, 'node1', 1, 200)];
    assert.deepEqual(overlappingAcks(split).map((a) => a.id), [5]);
    // A former primary that was rewound and promoted again, on a later timeline, is no overlap.
    const back = [...clean, ack(6, 'node1', 3, 300)];
    assert.deepEqual(overlappingAcks(back), []);
    // Two members on the same timeline number (two promotions from one parent): overlapping reigns overlap...
    assert.deepEqual(overlappingAcks([ack(1, 'node2', 2, 0), ack(2, 'node3', 2, 50), ack(3, 'node2', 2, 100)]).map((a) => a.id), [2]);
    // ...one after the other do not (the number was reused by a later promotion).
    assert.deepEqual(overlappingAcks([ack(1, 'node2', 2, 0), ack(2, 'node2', 2, 20), ack(3, 'node3', 2, 50)]), []);
    // In flight at the same time (sent before the other's ack): not provably overlapping.
    assert.deepEqual(overlappingAcks([ack(1, 'node2', 2, 0, 100), ack(2, 'node1', 1, 50, 120)]), []);
  });

  it('a replica read is stale only past the byte limit against acks older than the grace', () => {
    const acks = [ack(1, 'node1', 1, 0, 0, '0/1000'), ack(2, 'node1', 1, 1_000, 1_000, '0/100000'), ack(3, 'node1', 1, 9_000, 9_000, '0/900000')];
    const read = (at: number, lsn: string, timeline = 1) => ({ at, server: 'node2', inRecovery: true, lsn, timeline });
    // At 5 s with a 3 s grace the reference is 0/100000: 0/F0000 is 64 kB behind.
    assert.equal(staleReads([read(5_000, '0/F0000')], acks, 128 * 1024, 3_000).length, 0);
    assert.equal(staleReads([read(5_000, '0/1000')], acks, 128 * 1024, 3_000).length, 1);
    // The ack at 9 s is younger than the grace at 10 s: not held against the read.
    assert.equal(staleReads([read(10_000, '0/F0000')], acks, 128 * 1024, 3_000).length, 0);
    // Another timeline is not compared; a primary's read is never stale.
    assert.equal(staleReads([read(5_000, '0/1000', 2)], acks, 128 * 1024, 3_000).length, 0);
    assert.equal(staleReads([{ ...read(5_000, '0/1000'), inRecovery: false }], acks, 128 * 1024, 3_000).length, 0);
  });

  it('unavailability is the longest gap from the fault to the first ack after convergence', () => {
    const acks = [ack(1, 'a', 1, 0, 90), ack(2, 'a', 1, 0, 100), ack(3, 'a', 1, 0, 2_100), ack(4, 'a', 1, 0, 2_150), ack(5, 'a', 1, 0, 9_000)];
    assert.equal(longestGap(acks, 95, 2_120), 2_000);
    // Writes that stop again after convergence count until they resume.
    assert.equal(longestGap(acks, 95, 2_200), 6_850);
    // No ack after convergence at all: the gap runs to the convergence.
    assert.equal(longestGap(acks.slice(0, 2), 95, 3_000), 2_900);
  });

  it('lost commits are charged to the fault whose window holds them; sync loss is a violation, async loss is reported', () => {
    const faults = [fault(0, 1_000, 'sync'), fault(1, 5_000, 'async')];
    assert.equal(windowOf(faults, 500), -1);
    assert.equal(windowOf(faults, 4_999), 0);
    const acks = [ack(1, 'node1', 1, 900), ack(2, 'node1', 1, 2_000), ack(3, 'node1', 1, 6_000), ack(4, 'node2', 2, 7_000)];
    const result = check({
      faults,
      writers: [{ name: 'multi-host', acks, present: new Set([1, 4]) }],
      reads: [],
      maxLagBytes: 1024,
      graceMs: 3_000,
      amcheck: { node1: { ok: true, output: '' } },
      finalProblems: [],
    });
    assert.equal(result.perFault[0]!.writers['multi-host']!.lost, 1);
    assert.equal(result.perFault[1]!.writers['multi-host']!.lost, 1);
    assert.deepEqual(result.totals.sync['multi-host'], { acked: 2, lost: 1 });
    assert.deepEqual(result.totals.async['multi-host'], { acked: 2, lost: 1 });
    assert.deepEqual(result.violations.map((v) => [v.rule, v.fault]), [['lost-sync', 0]]);
  });

  it('overlaps in async mode are known issues only when the run says so; no convergence and amcheck failures are violations', () => {
    const faults = [fault(0, 1_000, 'async', null)];
    const acks = [ack(1, 'node2', 2, 1_100), ack(2, 'node1', 1, 1_200)];
    const input = {
      faults,
      writers: [{ name: 'router', acks, present: new Set([1, 2]) }],
      reads: [],
      maxLagBytes: 1024,
      graceMs: 3_000,
      amcheck: { node3: { ok: false, output: 'heap corruption' } },
      finalProblems: [],
    };
    assert.deepEqual(check(input).violations.map((v) => v.rule).sort(), ['amcheck', 'no-convergence', 'overlap']);
    const tolerant = check({ ...input, tolerateAsyncOverlap: true });
    assert.deepEqual(tolerant.violations.map((v) => v.rule).sort(), ['amcheck', 'no-convergence']);
    assert.deepEqual(tolerant.knownIssues.map((v) => v.rule), ['overlap']);
  });

  it('a quorum run with failsafe: its sync windows keep the no-loss rule, and the verdict names synchronousMode and failsafe', () => {
    const faults = [{ ...fault(0, 1_000, 'sync'), kind: 'quorum-change-primary-loss' }];
    const acks = [ack(1, 'node1', 1, 1_100), ack(2, 'node2', 2, 3_000)];
    const result = check({ faults, writers: [{ name: 'router', acks, present: new Set([2]) }], reads: [], maxLagBytes: 1024, graceMs: 3_000, amcheck: {}, finalProblems: [] });
    assert.deepEqual(result.violations.map((v) => [v.rule, v.fault]), [['lost-sync', 0]]);
    const run: RunResult = { options: { seed: 7, durationMs: 0, mode: 'sync', synchronous: 'quorum', failsafe: true }, startedAt: 0, endedAt: 60_000, faults, check: result, reads: 0, readFailures: 0 };
    const text = verdictMarkdown(run, '');
    assert.match(text, /^# Chaos run, seed 7, mode sync, synchronousMode quorum, failsafe on$/m);
    assert.match(text, /^\| sync \(quorum\) \| through the router \| 2 \| 1 \|$/m);
    assert.match(text, /^\| 0 \| quorum-change-primary-loss \| sync \(quorum\) \|/m);
    // Runs recorded before the option: sync meant `on`.
    assert.match(verdictMarkdown({ ...run, options: { seed: 7, durationMs: 0, mode: 'sync' } }, ''), /synchronousMode on, failsafe off/);
  });

  it('every fault kind is described', () => {
    for (const kind of FAULT_KINDS) assert.ok(FAULT_TEXT[kind].length > 20, kind);
  });

  it('the schedule is reproducible from its seed', () => {
    const a = rng(42);
    const b = rng(42);
    const draws = Array.from({ length: 20 }, () => a.int(0, 1000));
    assert.deepEqual(Array.from({ length: 20 }, () => b.int(0, 1000)), draws);
    assert.notDeepEqual(Array.from({ length: 20 }, () => rng(43).int(0, 1000)), draws);
  });

  it('chaos seed 4242, the run\'s end: without convergence lost commits are read back on the member running as primary on the newest timeline, else the furthest standby', () => {
    const c = (name: string, recovery: boolean, timeline: number, lsn: bigint) => ({ name, recovery, timeline, lsn });
    // node1 was rejoining (a standby), node2 an old primary on timeline 4 still running, node3 the newest primary on 5.
    assert.equal(pickReadBack([c('node1', true, 5, 900n), c('node2', false, 4, 1000n), c('node3', false, 5, 800n)])?.name, 'node3');
    assert.equal(pickReadBack([c('node1', true, 5, 700n), c('node2', true, 5, 900n)])?.name, 'node2', 'no primary: the standby that replayed furthest');
    assert.equal(pickReadBack([]), undefined);
  });
});
