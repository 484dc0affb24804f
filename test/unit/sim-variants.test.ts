/**
 * The seeded simulation in its quorum and failsafe variants (test/sim/sim.ts
 * makeSchedule): synchronousMode quorum (ANY k, the quorum record, failover
 * after comparing n - q + 1 positions), and store failsafe with extra store
 * outages meeting partitions, agent restarts and crashes. Bounded here;
 * longer: `npm run sim -- --variant quorum|failsafe --seeds N --steps M`.
 * And sync-loss: synchronousMode on, the synchronous standby lost while the
 * replacement lags, the primary's node killed right after the sync record
 * changes (`npm run sim -- --variant sync-loss`); quorum-loss, the same in quorum
 * mode, killed after the quorum record changes (`npm run sim -- --variant quorum-loss`).
 * Plus the violations the failsafe, sync-loss and quorum-loss variants found, replayed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { explore } from '../sim/explore.js';
import { makeSchedule, runSchedule } from '../sim/sim.js';

describe('seeded simulation, quorum, failsafe and sync-loss variants', () => {
  it('quorum mode: 300 schedules keep every invariant (an acknowledged commit is never lost)', () => {
    const result = explore(1, 300, 300, 'quorum');
    assert.equal(result.failure?.report, undefined);
    assert.ok(result.failovers > 50 && result.acknowledged > 50_000, `the schedules exercise failovers and writes (${result.failovers}, ${result.acknowledged})`);
  });

  it('failsafe: 300 schedules with store outages keep every invariant, and failsafe does hold primaries', () => {
    const result = explore(1, 300, 300, 'failsafe');
    assert.equal(result.failure?.report, undefined);
    assert.ok(result.failsafeRounds > 300, `failsafe held a primary without the store (${result.failsafeRounds} rounds)`);
  });

  it('sync-standby-loss window (sync-loss seed 1, faults 0,1,2): the synchronous standby lost, the primary killed 3 steps after the record changed, the lagging replacement is not promoted', () => {
    // On the code before the record kept \`previous\`, c was promoted by the lag check lacking commit 150, acknowledged through b alone.
    const full = makeSchedule(1, 300, 'sync-loss');
    const run = runSchedule({ ...full, faults: full.faults.filter((_, i) => i <= 2) });
    assert.equal(run.violation, undefined, run.violation?.message);
    assert.ok(run.trace.some((l) => /position of a unknown, it may hold acknowledged commits/.test(l)), 'c refused while the lost standby a could not be asked');
  });

  it('sync-loss seed 1379 (faults 0-3): a member promoted while the set was changing dies before a standby is verified; the lagging one is not promoted', () => {
    // With the promotion's reset to members [] and no previous, c was promoted by the lag check lacking commit 172.
    const full = makeSchedule(1379, 300, 'sync-loss');
    const run = runSchedule({ ...full, faults: full.faults.filter((_, i) => i <= 3) });
    assert.equal(run.violation, undefined, run.violation?.message);
  });

  it('sync-loss seed 1846 (faults 0-4): a primary whose switchover hand-over did not complete removes the request before restarting in place; its stale shutdown position elects nobody', () => {
    // The request kept shutdownLsn while the primary restarted and wrote on; when it died, c was elected on that
    // stale position ("received the old primary's last WAL") lacking commit 189.
    const full = makeSchedule(1846, 300, 'sync-loss');
    const run = runSchedule({ ...full, faults: full.faults.filter((_, i) => i <= 4) });
    assert.equal(run.violation, undefined, run.violation?.message);
    assert.ok(run.trace.some((l) => /restarting_primary \[clearFailoverRequest,startPostgres\]/.test(l)), 'the stale request is removed first');
  });

  it('sync-loss: 60 schedules losing the synchronous standby and killing the primary inside the change keep every invariant', () => {
    const result = explore(1, 60, 300, 'sync-loss');
    assert.equal(result.failure?.report, undefined);
    assert.ok(result.failovers > 20, `the schedules exercise failovers (${result.failovers})`);
  });

  it('quorum-loss seed 111 (faults 0,1,3,4,5): switched from `on` to quorum, the primary killed before it wrote a quorum record; the lagging standby is not promoted', () => {
    // With no quorum record the election fell back to the lag check and promoted b lacking commit 176, acknowledged through a.
    const full = makeSchedule(111, 300, 'quorum-loss');
    const run = runSchedule({ ...full, faults: full.faults.filter((_, i) => [0, 1, 3, 4, 5].includes(i)) });
    assert.equal(run.violation, undefined, run.violation?.message);
    assert.ok(run.trace.some((l) => /b: detaching_upstream -> electing: .*not in the synchronous set \(a\)/.test(l)), 'b refused on the sync record');
  });

  it('quorum-loss seed 160 (faults 0,1,3,6,9,11): the new primary holds commits its lagging provisional standby lacks and dies; that standby is not promoted', () => {
    // With the promotion's record naming the provisional standby c alone (q = 1), c was its own witness and was
    // promoted lacking commit 252, acknowledged by the former primary b and held by the new primary a alone.
    const full = makeSchedule(160, 600, 'quorum-loss');
    const run = runSchedule({ ...full, faults: full.faults.filter((_, i) => [0, 1, 3, 6, 9, 11].includes(i)) });
    assert.equal(run.violation, undefined, run.violation?.message);
    assert.ok(run.trace.some((l) => /c: detaching_upstream -> electing: .*quorum record \[a, c\], quorum 1: positions known from 1 of the 2/.test(l)), 'c refused while a could not be asked');
  });

  it('quorum-loss seed 15 (faults 0-7, 11): a member whose pg_rewind failed, waiting through a switchover, returns to rewind_failed by a legal edge', () => {
    // The state table had no edge waiting_for_primary -> rewind_failed (E_STATE_ILLEGAL_EDGE, a defect).
    const full = makeSchedule(15, 600, 'quorum-loss');
    const run = runSchedule({ ...full, faults: full.faults.filter((_, i) => i <= 7 || i === 11) });
    assert.equal(run.violation, undefined, run.violation?.message);
  });

  it('quorum-loss: 30 schedules losing a quorum member and killing the primary after the quorum record changes keep every invariant', () => {
    const result = explore(1, 30, 300, 'quorum-loss');
    assert.equal(result.failure?.report, undefined);
    assert.ok(result.failovers > 10, `the schedules exercise failovers (${result.failovers})`);
  });

  it('failsafe seed 81: a replica that reaches the store keeps its promise to the primary cut off from it', () => {
    const full = makeSchedule(81, 300, 'failsafe');
    assert.equal(runSchedule({ ...full, faults: full.faults.filter((_, i) => i === 0) }).violation, undefined);
  });

  it('failsafe seed 246: the watchdog stopping a failsafe primary is followed by a legal edge when the store is back', () => {
    const full = makeSchedule(246, 300, 'failsafe');
    assert.equal(runSchedule({ ...full, faults: full.faults.filter((_, i) => i <= 3) }).violation, undefined);
  });

  it('failsafe seed 1140: a draining primary whose lease lapsed (its agent restarted) takes the lease again', () => {
    const full = makeSchedule(1140, 600, 'failsafe');
    assert.equal(runSchedule({ ...full, faults: full.faults.filter((_, i) => [2, 3, 4, 5].includes(i)) }).violation, undefined);
  });
});
