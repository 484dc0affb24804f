/**
 * Quorum commit at failover (issue 16), ANY 1 of two standbys, under write load:
 *   - a standby leaves and rejoins during writes, then the primary dies: the
 *     promoted member holds every acknowledged commit;
 *   - the primary dies together with the most advanced standby: the remaining
 *     standby cannot prove it holds everything and refuses; once the dead
 *     standby's server is back, the most advanced of them is promoted and
 *     nothing is lost.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FAULT_TEST_SETTINGS } from '../helpers/cluster.js';
import { lossCase, readRecord, withDiagnostics, type LossCase } from '../helpers/standby-loss.js';
import { sleep, waitFor } from '../helpers/wait.js';

const SETTINGS = { ...FAULT_TEST_SETTINGS, synchronousMode: 'quorum' as const, synchronousCount: 1 };

async function bothInQuorum(c: LossCase, leader: string): Promise<void> {
  await waitFor(`both standbys of ${leader} in the quorum record`, async () => {
    const r = await readRecord<{ leader: string; members: string[]; quorum: number }>(c, 'quorum');
    return r && r.leader === leader && r.members.length === 2 && r.quorum === 1;
  }, 90_000);
}

async function newPrimary(c: LossCase, not: string, timeoutMs = 90_000): Promise<string> {
  const status = await waitFor(`a primary other than ${not}`, async () => (await c.cluster.memberStatuses()).find((m) => m.state === 'primary' && m.name !== not), timeoutMs, 100);
  return status.name;
}

/** A new primary takes writes, and every acknowledged commit is on it. */
async function promotedWithoutLoss(c: LossCase, report: (line: string) => void): Promise<void> {
  const promoted = await newPrimary(c, c.primary);
  await c.writer.waitForAcks(20, 60_000, promoted);
  await c.writer.stop();
  const verdict = await c.writer.verify(c.cluster);
  report(`promoted ${promoted}; ${verdict.acknowledged} acknowledged, ${c.writer.serverSequence()}`);
  assert.deepEqual(verdict.lost, [], 'no acknowledged commit lost');
}

describe('quorum commit: failover keeps every acknowledged commit', { timeout: 300_000 }, () => {
  it('a standby leaves and rejoins during writes, then the primary dies: nothing lost', async (t) => {
    const c = await lossCase(t, SETTINGS, 'quorum_failover');
    await withDiagnostics(c, async () => {
      await bothInQuorum(c, c.primary);
      const leaving = c.replicas[0]!;
      await c.faults.kill(leaving, 'both');
      await waitFor('the quorum record without the lost standby', async () => {
        const r = await readRecord<{ members: string[] }>(c, 'quorum');
        return r && !r.members.includes(leaving);
      }, 60_000);
      c.cluster.startAgent(leaving);
      await bothInQuorum(c, c.primary);
      await c.writer.waitForAcks(100);
      await c.faults.kill(c.primary, 'both');
      await promotedWithoutLoss(c, (line) => t.diagnostic(line));
    });
  });

  it('the primary dies with the most advanced standby: the other refuses until it can compare, then the most advanced is promoted', async (t) => {
    const c = await lossCase(t, SETTINGS, 'quorum_refuse');
    await withDiagnostics(c, async () => {
      await bothInQuorum(c, c.primary);
      const [ahead, behind] = c.replicas as [string, string];
      // `behind` stops receiving; commits keep being acknowledged by `ahead` alone (ANY 1).
      const receivers = c.faults.stopByTitle(behind, /walreceiver/).pids;
      try {
        await c.writer.waitForAcks(100);
      } finally {
        await c.faults.kill(c.primary, 'both');
        await c.faults.kill(ahead, 'both');
        c.faults.resumePids(receivers);
      }
      // Three lease lengths: ample time to fail over, had the rule allowed it.
      await sleep(3 * SETTINGS.ttlMs!);
      const statuses = await c.cluster.memberStatuses();
      const lone = statuses.find((m) => m.name === behind);
      assert.ok(!statuses.some((m) => m.state === 'primary' || m.state === 'promoting'), `nobody may promote: ${statuses.map((m) => `${m.name}=${m.state}`).join(', ')}`);
      assert.match(lone?.reason ?? '', /quorum record/, `${behind} says why it waits`);
      t.diagnostic(`${behind} refused: ${lone?.reason}`);
      c.cluster.startAgent(ahead);
      await promotedWithoutLoss(c, (line) => t.diagnostic(line));
    });
  });
});
