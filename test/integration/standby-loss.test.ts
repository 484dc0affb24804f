/**
 * Losing a synchronous standby under write load (issue 16): the primary
 * notices the lost walsender in pg_stat_replication and names a healthy
 * standby, without waiting for the lost member's key to expire.
 *   - `on` (FIRST): the replacement is in the sync record while the killed
 *     member's key still exists (ttlMs is long on purpose), and the writer's
 *     longest pause stays far below ttlMs;
 *   - `quorum` (ANY 1 of both standbys): the survivor keeps acknowledging.
 * No acknowledged commit is lost. Pauses are reported; the bounds are generous.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clusterKeys } from '../../src/cluster/keys.js';
import { lossCase, readRecord, withDiagnostics } from '../helpers/standby-loss.js';
import { waitFor } from '../helpers/wait.js';

/** Long lease: the killed member's key outlives the repair by far, so the repair cannot come from its expiry. */
const SETTINGS = { ttlMs: 12_000, loopWaitMs: 500, fenceMarginMs: 2_000, synchronousFallbackMs: 120_000, primaryRestartTimeoutMs: 30_000 };

describe('synchronous standby lost under write load', { timeout: 240_000 }, () => {
  it("on (FIRST): the primary replaces it from pg_stat_replication before the lost member's key expires; nothing lost", async (t) => {
    const c = await lossCase(t, { ...SETTINGS, synchronousMode: 'on' }, 'loss_on');
    await withDiagnostics(c, async () => {
      const sync = await waitFor('a synchronous standby in the record', async () => {
        const r = await readRecord<{ leader: string; members: string[] }>(c, 'sync');
        return r && r.leader === c.primary && r.members.length === 1 ? r : undefined;
      }, 60_000);
      const lost = sync.members[0]!;
      const survivor = c.replicas.find((r) => r !== lost)!;
      const { at } = await c.faults.kill(lost, 'both');
      const replaced = await waitFor(`${survivor} in the sync record`, async () => {
        const r = await readRecord<{ members: string[] }>(c, 'sync');
        return r && r.members.includes(survivor) ? Date.now() : undefined;
      }, 60_000, 50);
      const keyLeft = await c.cluster.store.get(clusterKeys(c.cluster.clusterName).member(lost));
      assert.ok(keyLeft, `${lost}'s member key had already expired when ${survivor} was recorded: the repair waited for the key, not for pg_stat_replication`);
      await c.writer.waitForAcks(50);
      const pause = c.writer.longestGap(at, Date.now());
      t.diagnostic(`FIRST mode: longest write pause ${pause} ms after killing synchronous standby ${lost}; ${survivor} recorded ${replaced - at} ms after the kill`);
      assert.ok(pause < SETTINGS.ttlMs / 2, `longest pause ${pause} ms: expected far below ttlMs=${SETTINGS.ttlMs}`);
      await c.writer.stop();
      const verdict = await c.writer.verify(c.cluster);
      assert.deepEqual(verdict.lost, [], 'no acknowledged commit lost');
    });
  });

  it('quorum (ANY 1 of both standbys): the survivor keeps acknowledging; the list shrinks to it; nothing lost', async (t) => {
    const c = await lossCase(t, { ...SETTINGS, synchronousMode: 'quorum', synchronousCount: 1 }, 'loss_quorum');
    await withDiagnostics(c, async () => {
      await waitFor('both standbys in the quorum record', async () => {
        const r = await readRecord<{ leader: string; members: string[]; quorum: number }>(c, 'quorum');
        return r && r.leader === c.primary && r.members.length === 2 && r.quorum === 1;
      }, 60_000);
      const [lost, survivor] = c.replicas as [string, string];
      const { at } = await c.faults.kill(lost, 'both');
      await waitFor(`quorum record down to ${survivor}`, async () => {
        const r = await readRecord<{ members: string[]; quorum: number }>(c, 'quorum');
        return r && r.members.length === 1 && r.members[0] === survivor && r.quorum === 1;
      }, 60_000, 50);
      await c.writer.waitForAcks(50);
      const pause = c.writer.longestGap(at, Date.now());
      t.diagnostic(`quorum mode: longest write pause ${pause} ms after killing standby ${lost}`);
      // Generous bound (the target, 0.5 s, is a benchmark figure): far below the FIRST-mode repair.
      assert.ok(pause < 2_000, `longest pause ${pause} ms`);
      await c.writer.stop();
      const verdict = await c.writer.verify(c.cluster);
      assert.deepEqual(verdict.lost, [], 'no acknowledged commit lost');
    });
  });
});
