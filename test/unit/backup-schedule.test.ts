import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CLAIM_STALE_MS, decideSchedule, type ScheduleClaim, type ScheduleView } from '../../src/backup/schedule.js';

const h = 3_600_000;
const NOW = Date.parse('2026-12-02T12:00:00Z');
const at = (ms: number) => new Date(ms).toISOString();

/** A leader (a) with a daily full and hourly incrementals, last full 30 min ago. */
function view(overrides: Partial<ScheduleView> = {}): ScheduleView {
  return {
    schedule: { fullEveryHours: 24, incrementalEveryHours: 1, dumpEveryHours: 0, verify: true, checkSeconds: 60 },
    now: NOW,
    self: 'a',
    leader: 'a',
    claim: undefined,
    newestFull: NOW - 0.5 * h,
    newestAny: NOW - 0.5 * h,
    newestDump: undefined,
    ...overrides,
  };
}

const claim = (member: string, heartbeatAgoMs: number): ScheduleClaim => ({ member, type: 'full', startedAt: at(NOW - 2 * h), heartbeatAt: at(NOW - heartbeatAgoMs) });

describe('backup schedule decision', () => {
  it('asks for a full first, then incrementals, then nothing until due', () => {
    assert.equal(decideSchedule(view({ newestFull: undefined, newestAny: undefined })).run, 'full');
    assert.match(decideSchedule(view({ newestFull: undefined, newestAny: undefined })).reason, /no full backup yet/);
    assert.equal(decideSchedule(view()).run, null);
    assert.equal(decideSchedule(view({ newestFull: NOW - 10 * h, newestAny: NOW - 2 * h })).run, 'incremental');
    assert.equal(decideSchedule(view({ newestFull: NOW - 30 * h, newestAny: NOW - 0.1 * h })).run, 'full');
    // Due exactly at the period.
    assert.equal(decideSchedule(view({ newestFull: NOW - 24 * h, newestAny: NOW - 0.1 * h })).run, 'full');
  });

  it('runs nothing without a schedule', () => {
    const d = decideSchedule(view({ schedule: { fullEveryHours: 0, incrementalEveryHours: 0, dumpEveryHours: 0, verify: true, checkSeconds: 60 }, newestFull: undefined, newestAny: undefined }));
    assert.deepEqual(d, { run: null, reason: 'no schedule' });
  });

  it('runs a scheduled dump when one is due and no base backup is', () => {
    const dumps = (overrides: Partial<ScheduleView>) => decideSchedule(view({ schedule: { fullEveryHours: 24, incrementalEveryHours: 0, dumpEveryHours: 6, verify: true, checkSeconds: 60 }, ...overrides }));
    assert.equal(dumps({}).run, 'dump');
    assert.match(dumps({}).reason, /no dump yet, dumps every 6 h/);
    assert.equal(dumps({ newestDump: NOW - 2 * h }).run, null);
    assert.equal(dumps({ newestDump: NOW - 6 * h }).run, 'dump');
    // A full due at the same time goes first; the dump waits for the next check.
    assert.equal(dumps({ newestFull: undefined, newestAny: undefined }).run, 'full');
    // Dumps alone, with no base backup schedule.
    assert.equal(decideSchedule(view({ schedule: { fullEveryHours: 0, incrementalEveryHours: 0, dumpEveryHours: 1, verify: true, checkSeconds: 60 }, newestFull: undefined, newestAny: undefined })).run, 'dump');
    // Another member's live dump claim is waited for, like a backup's.
    const waiting = dumps({ claim: { ...claim('b', 10_000), type: 'dump' } });
    assert.equal(waiting.run, null);
    assert.match(waiting.reason, /b is still running the scheduled dump/);
  });

  it('only the leader runs schedules', () => {
    const due = { newestFull: undefined, newestAny: undefined };
    assert.deepEqual(decideSchedule(view({ ...due, leader: 'b' })), { run: null, reason: 'b holds the leader key and runs the schedules' });
    assert.deepEqual(decideSchedule(view({ ...due, leader: undefined })), { run: null, reason: 'no leader: schedules wait for one' });
  });

  it('after a failover the new leader waits for the old leader\'s run still going, instead of starting a second backup', () => {
    // b led and started a full 2 h ago (not in the catalogue yet); a now leads and would find a full due.
    const d = decideSchedule(view({ newestFull: NOW - 26 * h, newestAny: NOW - 26 * h, claim: claim('b', 10_000) }));
    assert.equal(d.run, null);
    assert.match(d.reason, /b is still running the scheduled full backup/);
  });

  it('after the old leader finished (claim gone, its backup in the catalogue) nothing is due on the new leader', () => {
    assert.equal(decideSchedule(view({ newestFull: NOW - 0.01 * h, newestAny: NOW - 0.01 * h, claim: undefined })).run, null);
  });

  it('a claim whose holder stopped beating is taken over once stale, and says so', () => {
    const fresh = decideSchedule(view({ newestFull: NOW - 26 * h, claim: claim('b', CLAIM_STALE_MS) }));
    assert.equal(fresh.run, null, 'at exactly the limit the claim still counts');
    const stale = decideSchedule(view({ newestFull: NOW - 26 * h, claim: claim('b', CLAIM_STALE_MS + 1) }));
    assert.equal(stale.run, 'full');
    assert.ok(stale.run && stale.takeOver);
    assert.match(stale.reason, /taking over the claim b left/);
  });

  it('our own leftover claim (a previous agent process) does not block us', () => {
    const d = decideSchedule(view({ newestFull: NOW - 26 * h, claim: claim('a', 1_000) }));
    assert.equal(d.run, 'full');
    assert.ok(d.run && d.takeOver);
  });

  it('a stale claim does not make anything due by itself', () => {
    assert.equal(decideSchedule(view({ claim: claim('b', 10 * h) })).run, null);
  });

  it('an unreadable heartbeat time counts as stale, not as a claim held forever', () => {
    assert.equal(decideSchedule(view({ newestFull: NOW - 26 * h, claim: { ...claim('b', 0), heartbeatAt: 'garbage' } })).run, 'full');
  });
});
