/**
 * Store failsafe (issue 16) on etcd, default timing (ttlMs 6 s), under write load:
 *   - etcd frozen (SIGSTOP) for twice ttlMs with every member up: the primary
 *     keeps acknowledging writes (every member confirms it over POST
 *     /failsafe), says so in its status and log, and nothing is lost;
 *   - etcd frozen and one replica's agent frozen too (it cannot confirm): the
 *     primary stops acknowledging within ttlMs of the fault.
 */
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { lossCase, withDiagnostics } from '../helpers/standby-loss.js';
import { sleep, waitFor } from '../helpers/wait.js';

const SETTINGS = { failsafe: true, synchronousMode: 'on' as const, synchronousFallbackMs: 120_000 };
const TTL_MS = 6_000;

/** api.auth for every member (failsafe asks peers over the authenticated API), password in a 0600 file. */
function apiAuth(): Record<string, unknown> {
  const file = join(process.env.TMPDIR ?? '/tmp', `relevo-failsafe-${process.pid}-api-password`);
  writeFileSync(file, 'failsafe-test-password\n', { mode: 0o600 });
  chmodSync(file, 0o600);
  return { api: { auth: { username: 'relevo', password: { file } } } };
}

describe('store failsafe', { timeout: 300_000 }, () => {
  it('etcd frozen for 2 × ttlMs with every member up: writes keep flowing on the same primary, 0 lost', async (t) => {
    const c = await lossCase(t, SETTINGS, 'failsafe_up', apiAuth());
    await withDiagnostics(c, async () => {
      const etcdStop = c.faults.suspendEtcd(c.etcd);
      const during = await waitFor('the primary reports failsafe active', async () => {
        const status = JSON.parse((await c.cluster.api(c.primary, '/status')).body) as { state: string; reason: string };
        return /failsafe active/.test(status.reason) ? status : undefined;
      }, TTL_MS * 2, 200);
      const list = await c.cluster.cli(['list'], c.primary);
      assert.match(`${list.stdout}${list.stderr}`, /failsafe active/, 'relevo list, without the store, shows what the member says');
      await sleep(Math.max(0, etcdStop.at + 2 * TTL_MS - Date.now()));
      const back = c.faults.resumeEtcd(c.etcd);
      await c.writer.waitForAcks(50, 60_000);
      await waitFor('the primary publishing after the outage', async () => (await c.cluster.memberStatuses()).find((m) => m.state === 'primary' && Date.parse(m.updatedAt) > back.at), 90_000, 100);
      await c.cluster.waitHealthy([c.primary, ...c.replicas], 60_000);
      const pause = c.writer.longestGap(etcdStop.at, back.at);
      const servers = new Set(c.writer.acksSentBetween(etcdStop.at, back.at).map((a) => a.server));
      t.diagnostic(`failsafe: longest write pause ${pause} ms during a ${back.at - etcdStop.at} ms etcd outage; primary said "${during.reason}"`);
      assert.deepEqual([...servers], [c.primary], 'the same primary acknowledged writes throughout the outage');
      assert.ok(pause < TTL_MS / 2, `longest pause ${pause} ms: the primary did not ride the outage out`);
      assert.match(readFileSync(c.cluster.member(c.primary).logFile, 'utf8'), /failsafe active/);
      const primaries = (await c.cluster.memberStatuses()).filter((m) => m.state === 'primary').map((m) => m.name);
      assert.deepEqual(primaries, [c.primary], 'the same primary leads after the outage');
      await c.writer.stop();
      const verdict = await c.writer.verify(c.cluster);
      assert.deepEqual(verdict.lost, [], 'no acknowledged commit lost');
    });
  });

  it('etcd frozen and one replica unreachable: failsafe ends and the primary stops acknowledging within ttlMs', async (t) => {
    const c = await lossCase(t, SETTINGS, 'failsafe_cut', apiAuth());
    await withDiagnostics(c, async () => {
      const cut = c.replicas[0]!;
      c.faults.stop(cut, 'agent');
      const { at } = c.faults.suspendEtcd(c.etcd);
      await waitFor(`${c.primary}'s PostgreSQL to stop`, () => c.cluster.postmasterPid(c.primary) === undefined, 3 * TTL_MS, 100);
      const lastAck = c.writer.acks.filter((a) => a.server === c.primary).at(-1)!;
      const acknowledgedFor = lastAck.ackedAt - at;
      t.diagnostic(`failsafe ended: ${c.primary} acknowledged its last write ${acknowledgedFor} ms after the fault, stopped by ${Date.now() - at} ms`);
      assert.ok(acknowledgedFor < TTL_MS, `${c.primary} acknowledged writes ${acknowledgedFor} ms after the fault: more than ttlMs`);
      assert.match(readFileSync(c.cluster.member(c.primary).logFile, 'utf8'), /failsafe ended/);
      const back = c.faults.resumeEtcd(c.etcd).at;
      c.faults.resume(cut, 'agent');
      // Statuses published before the outage may still be in the store: wait for a primary that published since.
      await waitFor('a primary publishing after the outage', async () => (await c.cluster.memberStatuses()).find((m) => m.state === 'primary' && Date.parse(m.updatedAt) > back), 90_000, 100);
      await c.cluster.waitHealthy([c.primary, ...c.replicas], 90_000);
      await c.writer.waitForAcks(20, 60_000);
      await c.writer.stop();
      const verdict = await c.writer.verify(c.cluster);
      assert.deepEqual(verdict.lost, [], 'no acknowledged commit lost');
    });
  });
});
