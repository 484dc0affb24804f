/**
 * Store failsafe (issue 16) on etcd, ttlMs 5 s (the test cluster's timing), under write
 * load from a multi-host writer and from a writer through `relevo router`:
 *   - etcd frozen (SIGSTOP) for twice ttlMs with every member up: the primary
 *     keeps acknowledging writes (every member confirms it over POST
 *     /failsafe), says so in its status, metrics and log; the router keeps
 *     routing writes to it (its agent confirms over GET /failsafe): no write
 *     through the router fails, and nothing is lost;
 *   - etcd frozen until the router rides on failsafe, then one replica's agent
 *     frozen too (it cannot confirm): the router stops routing writes to the
 *     primary, and the primary stops acknowledging, within ttlMs of the cut.
 */
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { lossCase, withDiagnostics } from '../helpers/standby-loss.js';
import { sleep, waitFor } from '../helpers/wait.js';

const TTL_MS = 5_000;
const SETTINGS = { failsafe: true, synchronousMode: 'on' as const, synchronousFallbackMs: 120_000, ttlMs: TTL_MS };

/** api.auth for every member (failsafe asks peers over the authenticated API), password in a 0600 file. */
function apiAuth(): Record<string, unknown> {
  const file = join(process.env.TMPDIR ?? '/tmp', `relevo-failsafe-${process.pid}-api-password`);
  writeFileSync(file, 'failsafe-test-password\n', { mode: 0o600 });
  chmodSync(file, 0o600);
  return { api: { auth: { username: 'relevo', password: { file } } } };
}

describe('store failsafe', { timeout: 300_000 }, () => {
  it('etcd frozen for 2 × ttlMs with every member up: writes keep flowing on the same primary, through the router too, 0 failed, 0 lost', async (t) => {
    const c = await lossCase(t, SETTINGS, 'failsafe_up', apiAuth(), { router: true });
    const router = c.router!;
    const routed = c.routed!;
    await withDiagnostics(c, async () => {
      const routedFailures = routed.failures.length;
      const etcdStop = c.faults.suspendEtcd(c.etcd);
      const during = await waitFor('the primary reports failsafe active', async () => {
        const status = JSON.parse((await c.cluster.api(c.primary, '/status')).body) as { state: string; reason: string };
        return /failsafe active/.test(status.reason) ? status : undefined;
      }, TTL_MS * 2, 200);
      const list = await c.cluster.cli(['list'], c.primary);
      assert.match(`${list.stdout}${list.stderr}`, /failsafe active/, 'relevo list, without the store, shows what the member says');
      await waitFor('relevo_failsafe_active 1 in the primary\'s metrics', async () => /^relevo_failsafe_active\{[^}]*\} 1$/m.test((await c.cluster.api(c.primary, '/metrics')).body), TTL_MS, 200);
      const riding = await waitFor('the router routing writes on the failsafe grant', async () => {
        const stats = await router.stats().catch(() => undefined);
        return stats?.failsafe?.member === c.primary && stats.primary === c.primary && !stats.store.readable ? stats : undefined;
      }, TTL_MS * 2, 100);
      await sleep(Math.max(0, etcdStop.at + 2 * TTL_MS - Date.now()));
      const back = c.faults.resumeEtcd(c.etcd);
      await c.writer.waitForAcks(50, 60_000);
      await waitFor('the primary publishing after the outage', async () => (await c.cluster.memberStatuses()).find((m) => m.state === 'primary' && Date.parse(m.updatedAt) > back.at), 90_000, 100);
      await c.cluster.waitHealthy([c.primary, ...c.replicas], 60_000);
      await routed.waitForAcks(50, 60_000);
      const pause = c.writer.longestGap(etcdStop.at, back.at);
      const servers = new Set(c.writer.acksSentBetween(etcdStop.at, back.at).map((a) => a.server));
      const routedPause = routed.longestGap(etcdStop.at, Date.now());
      t.diagnostic(`failsafe: longest write pause ${pause} ms direct, ${routedPause} ms through the router (store age ${riding.store.ageMs} ms when seen riding) during a ${back.at - etcdStop.at} ms etcd outage; primary said "${during.reason}"`);
      assert.deepEqual(routed.failures.slice(routedFailures), [], 'no write through the router failed during or after the outage');
      assert.match(readFileSync(router.logFile, 'utf8'), /writes still go to/, 'the router logs that it rides on failsafe');
      assert.deepEqual([...servers], [c.primary], 'the same primary acknowledged writes throughout the outage');
      assert.ok(pause < TTL_MS / 2, `longest pause ${pause} ms: the primary did not ride the outage out`);
      assert.match(readFileSync(c.cluster.member(c.primary).logFile, 'utf8'), /failsafe active/);
      const primaries = (await c.cluster.memberStatuses()).filter((m) => m.state === 'primary').map((m) => m.name);
      assert.deepEqual(primaries, [c.primary], 'the same primary leads after the outage');
      await c.writer.stop();
      const verdict = await c.writer.verify(c.cluster);
      assert.deepEqual(verdict.lost, [], 'no acknowledged commit lost');
      await routed.stop();
      assert.deepEqual((await routed.verify(c.cluster)).lost, [], 'no commit acknowledged through the router lost');
    });
  });

  it('etcd frozen, then one replica unreachable: failsafe ends, the router stops routing to the primary and the primary stops acknowledging within ttlMs', async (t) => {
    const c = await lossCase(t, SETTINGS, 'failsafe_cut', apiAuth(), { router: true });
    const router = c.router!;
    await withDiagnostics(c, async () => {
      const cut = c.replicas[0]!;
      c.faults.suspendEtcd(c.etcd);
      await waitFor('the router routing writes on the failsafe grant', async () => (await router.stats().catch(() => undefined))?.failsafe?.member === c.primary, TTL_MS * 2, 100);
      const { at } = c.faults.stop(cut, 'agent');
      const stopped = await waitFor('the router to stop routing writes to the primary', async () => {
        const stats = await router.stats().catch(() => undefined);
        return stats && stats.primary === null && !stats.failsafe ? Date.now() : undefined;
      }, 2 * TTL_MS, 50);
      await waitFor(`${c.primary}'s PostgreSQL to stop`, () => c.cluster.postmasterPid(c.primary) === undefined, 3 * TTL_MS, 100);
      const lastAck = c.writer.acks.filter((a) => a.server === c.primary).at(-1)!;
      const acknowledgedFor = lastAck.ackedAt - at;
      const lastRouted = c.routed!.acks.at(-1)!;
      t.diagnostic(`failsafe ended: the router stopped routing to ${c.primary} ${stopped - at} ms after the cut (its last routed write acknowledged ${lastRouted.ackedAt - at} ms after); ${c.primary} acknowledged its last write ${acknowledgedFor} ms after, stopped by ${Date.now() - at} ms`);
      assert.ok(stopped - at < TTL_MS, `the router still routed writes to ${c.primary} ${stopped - at} ms after the cut: more than ttlMs`);
      assert.ok(acknowledgedFor < TTL_MS, `${c.primary} acknowledged writes ${acknowledgedFor} ms after the fault: more than ttlMs`);
      assert.match(readFileSync(c.cluster.member(c.primary).logFile, 'utf8'), /failsafe ended/);
      assert.match(readFileSync(router.logFile, 'utf8'), /failsafe grant ended/);
      const back = c.faults.resumeEtcd(c.etcd).at;
      c.faults.resume(cut, 'agent');
      // Statuses published before the outage may still be in the store: wait for a primary that published since.
      await waitFor('a primary publishing after the outage', async () => (await c.cluster.memberStatuses()).find((m) => m.state === 'primary' && Date.parse(m.updatedAt) > back), 90_000, 100);
      await c.cluster.waitHealthy([c.primary, ...c.replicas], 90_000);
      await c.writer.waitForAcks(20, 60_000);
      await c.writer.stop();
      await c.routed!.stop();
      const verdict = await c.writer.verify(c.cluster);
      assert.deepEqual(verdict.lost, [], 'no acknowledged commit lost');
      assert.deepEqual((await c.routed!.verify(c.cluster)).lost, [], 'no commit acknowledged through the router lost');
    });
  });
});
