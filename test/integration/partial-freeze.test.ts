/**
 * Regression test for the partial freeze of issue 12: asynchronous mode, etcd,
 * a writer with a libpq-style multi-host list (not through the router) that
 * keeps its session open. The primary's agent and postmaster are SIGSTOPped
 * while its backends keep serving: no new connection and no SQL fence can
 * reach that server, and before the fencer (src/fence) it went on
 * acknowledging commits beside the new primary (measured by hand: 682,970 in
 * 3 min, 669,981 lost on rejoin).
 *
 * Definitions (times on the test's clock):
 *   freezeAt  when the agent was stopped; its last lease renewal was sent before it.
 *   leaseGone freezeAt + ttlMs: the old primary's lease has certainly expired by then.
 *   deadline  freezeAt + ttlMs - fenceMarginMs: the latest the fencer may act
 *             (it acts ttlMs - fenceMarginMs after the last renewal, earlier still).
 * A violation is a commit the old primary acknowledged that the writer sent at or
 * after leaseGone (the commit then certainly happened without a lease), or one
 * sent once the new primary ran (seen promoted in the store, or its first
 * acknowledgement, whichever came first): overlapping primaries.
 * Lost commits after the rejoin must all have been sent before leaseGone; the
 * fenceMarginMs between deadline and leaseGone is the slack a loaded machine
 * may take from the fencer (how many were sent after the deadline is reported).
 *
 * Variant: only the agent frozen, the postmaster alive: the fencer stops the
 * server by PID before the lease can expire (before, the new primary's SQL fence
 * did it, after the promotion).
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { lossCase, withDiagnostics, type LossCase } from '../helpers/standby-loss.js';
import { isAlive } from '../helpers/faults.js';
import { waitFor, sleep } from '../helpers/wait.js';

const SETTINGS = { ttlMs: 3_000, loopWaitMs: 300, fenceMarginMs: 1_000, synchronousMode: 'off' as const, primaryRestartTimeoutMs: 10_000 };
/** How long the frozen primary stays frozen after the new primary appears: time for it to misbehave. */
const HOLD_MS = 3_000;

interface Round {
  old: string;
  next: string;
  freezeAt: number;
  promotedSeenAt: number;
  violations: number;
  overlapping: number;
  oldAcksAfterFreeze: number;
  postmasterAliveAtPromotion: boolean;
}

/** SIGSTOPs the old primary's agent (its process tree: the fencer is not in it) and, if asked, its postmaster alone. */
async function freezeRound(t: TestContext, c: LossCase, old: string, withPostmaster: boolean, stopped: Set<number>): Promise<Round> {
  await c.writer.waitForAcks(50, 30_000, old);
  const postmaster = c.cluster.postmasterPid(old);
  assert.ok(postmaster, `${old} runs PostgreSQL`);
  const { at: freezeAt, pids } = c.faults.stop(old, 'agent');
  if (withPostmaster) {
    process.kill(postmaster, 'SIGSTOP');
    stopped.add(postmaster);
  }
  t.diagnostic(`froze ${old}: agent tree ${pids.join(',')}${withPostmaster ? ` and postmaster ${postmaster}` : ''}; backends keep serving`);
  const next = await waitFor(
    'a new primary',
    async () => (await c.cluster.memberStatuses()).find((m) => m.name !== old && m.state === 'primary' && m.role === 'primary')?.name,
    60_000,
    50,
  );
  const promotedSeenAt = Date.now();
  const postmasterAliveAtPromotion = isAlive(postmaster);
  // Not waiting for the writer to move: before the fencer it never did while the old primary was frozen.
  await sleep(HOLD_MS);
  const leaseGone = freezeAt + SETTINGS.ttlMs;
  const oldAcks = c.writer.acks.filter((a) => a.server === old && a.sentAt >= freezeAt);
  const round: Round = {
    old,
    next,
    freezeAt,
    promotedSeenAt,
    violations: oldAcks.filter((a) => a.sentAt >= leaseGone).length,
    // Sent once the new primary ran (seen promoted, or its first acknowledgement of this round): two primaries at once.
    overlapping: oldAcks.filter((a) => a.sentAt >= Math.min(promotedSeenAt, c.writer.firstAckAfter(freezeAt, next)?.ackedAt ?? Infinity)).length,
    oldAcksAfterFreeze: oldAcks.length,
    postmasterAliveAtPromotion,
  };
  t.diagnostic(
    `${withPostmaster ? 'agent+postmaster' : 'agent only'} frozen on ${old}: new primary ${next} seen ${promotedSeenAt - freezeAt} ms after the freeze; ` +
      `${old} acknowledged ${round.oldAcksAfterFreeze} commits after the freeze, ${round.violations} sent after the lease was gone, ${round.overlapping} overlapping ${next}'s; ` +
      `postmaster alive at promotion: ${postmasterAliveAtPromotion}`,
  );
  // Thaw: the fenced processes are gone; what is left resumes (a killed pid gets nothing).
  for (const pid of stopped) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // fenced: gone
    }
  }
  stopped.clear();
  c.faults.resume(old, 'agent');
  await c.cluster.waitHealthy(['node1', 'node2', 'node3'], 120_000);
  return round;
}

function assertRound(round: Round): void {
  assert.equal(round.violations, 0, `${round.old} acknowledged ${round.violations} commits sent after its lease had expired (invariant 1)`);
  assert.equal(round.overlapping, 0, `${round.old} acknowledged ${round.overlapping} commits after ${round.next} had acknowledged one: two primaries`);
}

async function assertNothingLostAfter(t: TestContext, c: LossCase, rounds: Round[]): Promise<void> {
  await c.writer.stop();
  const verdict = await c.writer.verify(c.cluster);
  const byId = new Map(c.writer.acks.map((a) => [a.id, a]));
  const lost = verdict.lost.map((id) => byId.get(id)!);
  const late = lost.filter((a) => rounds.some((r) => a.server === r.old && a.sentAt >= r.freezeAt + SETTINGS.ttlMs));
  const afterDeadline = lost.filter((a) => rounds.some((r) => a.server === r.old && a.sentAt >= r.freezeAt + SETTINGS.ttlMs - SETTINGS.fenceMarginMs));
  t.diagnostic(`${verdict.acknowledged} acknowledged, ${lost.length} lost after the rejoins (${afterDeadline.length} sent after the fence deadline, ${late.length} after the lease was gone)`);
  assert.deepEqual(late.map((a) => a.id), [], 'no lost commit was acknowledged by a primary whose lease had expired');
  assert.ok(lost.every((a) => rounds.some((r) => a.server === r.old)), `only commits of a frozen primary may be lost: ${lost.map((a) => `${a.id}@${a.server}`).join(', ')}`);
}

describe('partial freeze of the primary (issue 12): a fence that needs neither the agent nor the postmaster', { timeout: 300_000 }, () => {
  it("agent and postmaster frozen, backends serving an open session; then agent only: the old primary acknowledges nothing once its lease can have expired", async (t) => {
    const c = await lossCase(t, SETTINGS, 'partial_freeze');
    const stopped = new Set<number>();
    t.after(() => {
      for (const pid of stopped) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // gone
        }
      }
    });
    await withDiagnostics(c, async () => {
      const first = await freezeRound(t, c, c.primary, true, stopped);
      assertRound(first);
      const second = await freezeRound(t, c, first.next, false, stopped);
      assertRound(second);
      assert.equal(second.postmasterAliveAtPromotion, false, `${second.old}'s postmaster still ran when ${second.next} was promoted: nothing stopped it before the lease expired`);
      await assertNothingLostAfter(t, c, [first, second]);
    });
  });
});
