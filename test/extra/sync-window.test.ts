/**
 * The sync-standby-loss window on real PostgreSQL (synchronousMode `on`,
 * FIRST 1; docs/architecture.md, *Synchronous mode*): the synchronous standby
 * is killed, and the primary's node is killed the moment the `sync` record
 * shows the change (`members: []`, `previous: [lost, replacement]`), before
 * the replacement is verified. The replacement must not be promoted while the
 * lost standby's position is unknown (before the fix the lag check let it
 * through); once the lost standby is back, the most advanced of the two is
 * promoted and no acknowledged commit is lost.
 * Not in the default suite (about a minute): `npm run test:sync-window`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { lossCase, readRecord, withDiagnostics } from '../helpers/standby-loss.js';
import { waitFor } from '../helpers/wait.js';

const SETTINGS = { synchronousMode: 'on' as const, ttlMs: 6_000, loopWaitMs: 500, fenceMarginMs: 2_000, synchronousFallbackMs: 120_000, primaryRestartTimeoutMs: 30_000 };

interface Sync {
  leader: string;
  members: string[];
  previous?: string[];
}

describe('sync-standby-loss window (on mode)', { timeout: 240_000 }, () => {
  it('the primary dies while the record is changing: no promotion while the lost standby is unknown, then the most advanced holder; nothing lost', async (t) => {
    const c = await lossCase(t, SETTINGS, 'sync_window');
    await withDiagnostics(c, async () => {
      const primary = c.primary;
      const sync = await waitFor('a synchronous standby in the record', async () => {
        const r = await readRecord<Sync>(c, 'sync');
        return r && r.leader === primary && r.members.length === 1 ? r : undefined;
      }, 60_000);
      const lost = sync.members[0]!;
      const replacement = c.replicas.find((r) => r !== lost)!;
      await c.faults.kill(lost, 'both');
      // Poll fast: the window lasts from this write until the replacement is verified (a loop or so).
      const seen = await waitFor('the record changing (previous kept)', async () => {
        const r = await readRecord<Sync>(c, 'sync');
        if (r && r.members.length > 0 && r.members[0] !== lost) return { missed: r };
        return r && r.members.length === 0 && (r.previous ?? []).includes(lost) ? { changing: r } : undefined;
      }, 30_000, 10);
      assert.ok(seen.changing, `the replacement was verified before the window was seen (the record never showed it changing): ${JSON.stringify(seen.missed)}`);
      const changing = seen.changing;
      await c.faults.kill(primary, 'both');
      const acknowledged = c.writer.acknowledged;
      t.diagnostic(`record when the primary ${primary} was killed: ${JSON.stringify(changing)}; ${acknowledged} commits acknowledged`);
      assert.deepEqual([...(changing.previous ?? [])].sort(), [lost, replacement].sort());
      // The lease expires after ttlMs; the replacement then refuses, its reason naming the unknown lost standby.
      const refused = await waitFor(`${replacement} refusing to take over`, async () => {
        const s = await c.cluster.status(replacement);
        return s && /position of .* unknown/.test(s.reason ?? '') ? s.reason : undefined;
      }, SETTINGS.ttlMs * 4, 200);
      t.diagnostic(`${replacement}: ${refused}`);
      await new Promise((resolve) => setTimeout(resolve, 2 * SETTINGS.loopWaitMs));
      const statuses = await c.cluster.memberStatuses();
      assert.equal(statuses.find((m) => m.name === replacement)?.role, 'replica', `${replacement} was promoted while ${lost}'s position was unknown`);
      // The lost standby comes back: both positions known, the most advanced is promoted.
      c.cluster.startAgent(lost);
      const promoted = await waitFor('a new primary', async () => {
        const s = (await c.cluster.memberStatuses()).find((m) => m.name !== primary && m.state === 'primary' && m.role === 'primary');
        return s?.name;
      }, 90_000, 200);
      await c.writer.waitForAcks(20, 60_000);
      await c.writer.stop();
      // The old primary's key lingers until its lease expires: verify once it is the only primary.
      await waitFor('one primary', async () => (await c.cluster.memberStatuses()).filter((m) => m.state === 'primary').length === 1, 30_000, 200);
      const verdict = await c.writer.verify(c.cluster);
      t.diagnostic(`${promoted} promoted; ${verdict.acknowledged} acknowledged, lost ${verdict.lost.length}`);
      assert.deepEqual(verdict.lost, [], 'no acknowledged commit lost');
    });
  });
});
