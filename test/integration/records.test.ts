/**
 * Issue 9 on a real 3-member cluster (synchronous mode, short leases): bad
 * records never stop HA, and every shared write is conditional.
 *   - settings: a change raises the generation; every member reports applying it;
 *   - a lost compare-and-swap on the sync record is seen and retried;
 *   - a corrupt sync record: the primary rewrites it with verified standbys only,
 *     commits keep being acknowledged;
 *   - a corrupt leader record: nobody promotes (named error), the primary keeps
 *     serving, `relevo list` shows it, `relevo store repair --delete` fixes it;
 *   - the user-reported case: the primary's member record corrupt when the
 *     primary dies: a replica still takes over; `relevo list` works throughout;
 *     `relevo store repair` fixes the record and the old primary rejoins.
 * One cluster, the cases in sequence, each leaving it healthy for the next.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { ClusterListing } from '../../src/cli/list.js';
import { clusterKeys } from '../../src/cluster/keys.js';
import { SyncRecordSchema } from '../../src/cluster/types.js';
import { FAULT_TEST_MEMBERS, FAULT_TEST_SETTINGS, TestCluster } from '../helpers/cluster.js';
import { Faults } from '../helpers/faults.js';
import { sleep, waitFor } from '../helpers/wait.js';

const NAMES = FAULT_TEST_MEMBERS;

function logLines(cluster: TestCluster, name: string): string[] {
  try {
    return readFileSync(cluster.member(name).logFile, 'utf8').split('\n');
  } catch {
    return [];
  }
}

/** Log lines of every member that report `key` as unreadable. */
function reports(cluster: TestCluster, key: string): Map<string, string[]> {
  return new Map(NAMES.map((n) => [n, logLines(cluster, n).filter((l) => l.includes('RECORD_UNREADABLE') && l.includes(`"key":"${key}"`))]));
}

async function listing(cluster: TestCluster, via: string): Promise<{ json: ClusterListing; table: string }> {
  const json = await cluster.cli(['list', '--json'], via);
  assert.equal(json.code, 0, `relevo list --json failed: ${json.stderr}`);
  const table = await cluster.cli(['list'], via);
  assert.equal(table.code, 0, `relevo list failed: ${table.stderr}`);
  return { json: JSON.parse(json.stdout) as ClusterListing, table: table.stdout };
}

/** A commit acknowledged by the primary (in synchronous mode: by a synchronous standby too), within the time given. */
async function commitAcknowledged(cluster: TestCluster, primary: string, value: string, timeoutMs = 10_000): Promise<void> {
  const insert = cluster.sql(primary, 'INSERT INTO records_probe (v) VALUES ($1)', [value]);
  insert.catch(() => undefined);
  const acknowledged = await Promise.race([insert.then(() => true), sleep(timeoutMs).then(() => false)]);
  assert.ok(acknowledged, `a commit on ${primary} was not acknowledged within ${timeoutMs} ms`);
}

async function diagnostics(cluster: TestCluster): Promise<string> {
  const parts: string[] = [];
  const statuses = await cluster.memberStatuses().catch(() => []);
  for (const name of NAMES) {
    const s = statuses.find((m) => m.name === name);
    parts.push(`--- ${name}: ${s ? `state=${s.state} role=${s.role} timeline=${s.timeline} reason=${s.reason}` : 'no status'}`, cluster.logTail(name, 30));
  }
  return parts.join('\n');
}

/** One case of the sequence: a failure names it. */
async function step(name: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (error) {
    if (error instanceof Error) error.message = `${name}: ${error.message}`;
    throw error;
  }
}

describe('bad records never stop HA; shared writes are conditional', () => {
  it('on a 3-member cluster', async (t) => {
    const cluster = await TestCluster.create({ store: 'embedded', settings: FAULT_TEST_SETTINGS });
    const faults = new Faults(cluster);
    t.after(async () => {
      await faults.cleanup();
      await cluster.destroy();
    });
    const keys = clusterKeys(cluster.clusterName);
    try {
      for (const name of NAMES) await cluster.defineMember(name);
      for (const name of NAMES) cluster.startAgent(name);
      let members = await cluster.waitHealthy(NAMES, 90_000);
      let primary = members.find((m) => m.state === 'primary')!.name;
      await cluster.sql(primary, 'CREATE TABLE records_probe (id serial PRIMARY KEY, v text)');

      await step('a settings change raises the generation, and every member reports applying it', async () => {
        const before = (await listing(cluster, primary)).json.settingsGeneration!;
        const set = await cluster.cli(['config', 'set', 'slotGraceSeconds=1801'], primary);
        assert.equal(set.code, 0, set.stderr);
        const after = await waitFor('every member to apply the new settings', async () => {
          const { json } = await listing(cluster, primary);
          return json.settingsGeneration === before + 1 && json.settingsAppliedByAll ? json : undefined;
        }, 20_000, 300);
        assert.deepEqual(after.members.map((m) => m.settingsGeneration), [before + 1, before + 1, before + 1]);
        assert.match((await listing(cluster, primary)).table, new RegExp(`settings generation ${before + 1}, applied by every member`));
      });

      await step('a lost compare-and-swap on the sync record is seen and retried', async () => {
        const record = async () => SyncRecordSchema.parse(JSON.parse((await cluster.store.get(keys.sync))!.value));
        const synchronous = (await record()).members;
        assert.ok(synchronous.length > 0, 'a synchronous standby is recorded');
        // Another writer keeps emptying the record: each of the primary's swaps, made on an older read, loses.
        let racing = true;
        const racer = (async () => {
          while (racing) {
            await cluster.store.put(keys.sync, JSON.stringify({ leader: primary, members: [], updatedAt: new Date().toISOString() }));
            await sleep(5);
          }
        })();
        try {
          await waitFor('the primary to lose a compare-and-swap on the sync record', () =>
            logLines(cluster, primary).some((l) => l.includes('"action":"writeSyncRecord"') && l.includes(`lost the compare-and-swap on ${keys.sync}`)),
          20_000, 100);
        } finally {
          racing = false;
          await racer;
        }
        // Re-read and retried: the standby comes back into the record once the racer stops.
        await waitFor('the sync record to list the synchronous standby again', async () => ((await record()).members.length > 0 ? true : undefined), 20_000, 100);
        await commitAcknowledged(cluster, primary, 'after lost swap');
      });

      await step('a corrupt sync record: rewritten by the primary with verified standbys only; commits still acknowledged', async () => {
        const revision = await cluster.store.put(keys.sync, '{not json');
        const repaired = await waitFor('the primary to rewrite the sync record', async () => {
          const kv = await cluster.store.get(keys.sync);
          const parsed = kv && kv.revision !== revision ? SyncRecordSchema.safeParse(JSON.parse(kv.value)) : undefined;
          return parsed?.success && parsed.data.members.length > 0 ? parsed.data : undefined;
        }, 20_000, 100);
        assert.equal(repaired.leader, primary);
        assert.ok(repaired.members.every((m) => NAMES.includes(m) && m !== primary));
        await commitAcknowledged(cluster, primary, 'after corrupt sync');
        const seen = reports(cluster, keys.sync);
        assert.ok([...seen.values()].some((lines) => lines.length > 0), 'some agent names the unreadable sync record');
        for (const [name, lines] of seen) {
          const once = lines.filter((l) => l.includes(`"revision":${revision}`));
          assert.ok(once.length <= 1, `${name} reported revision ${revision} of the sync record ${once.length} times, not once`);
        }
      });

      await step('a corrupt leader record: nobody promotes, the primary keeps serving, list shows it, store repair fixes it', async () => {
        const timeline = (await cluster.status(primary))!.timeline;
        await cluster.store.put(keys.leader, '{not json');
        // Longer than a lease: were the damaged key taken as absent, a replica would have promoted by now.
        await sleep(2 * FAULT_TEST_SETTINGS.ttlMs!);
        const statuses = await cluster.memberStatuses();
        assert.deepEqual(statuses.filter((m) => m.role === 'primary').map((m) => m.name), [primary], 'still exactly the one primary');
        assert.ok(statuses.every((m) => m.timeline === timeline), 'no promotion');
        for (const m of statuses.filter((s) => s.name !== primary)) assert.match(m.reason, /RECORD_UNREADABLE: \/relevo\/test\/leader/, `${m.name} names the blocking record`);
        assert.match(statuses.find((m) => m.name === primary)!.reason, /RECORD_UNREADABLE/);
        // Replicas cannot tell who leads, but still say whom they stream from: the primary keeps its synchronous standby.
        for (const m of statuses.filter((s) => s.name !== primary)) assert.equal(m.upstream, primary, `${m.name} still names its upstream`);
        assert.doesNotMatch(statuses.find((m) => m.name === primary)!.reason, /unavailable/);
        await commitAcknowledged(cluster, primary, 'under a corrupt leader record');
        const { json, table } = await listing(cluster, primary);
        assert.ok(json.unreadable.some((r) => r.key === keys.leader && /not JSON/.test(r.problem)));
        assert.match(table, /leader: UNREADABLE/);
        const listed = await cluster.cli(['store', 'repair'], primary);
        assert.equal(listed.code, 0, listed.stderr);
        assert.match(listed.stdout, /\/relevo\/test\/leader \(revision \d+\): not JSON/);
        const repaired = await cluster.cli(['store', 'repair', '--delete', 'leader'], primary);
        assert.equal(repaired.code, 0, repaired.stderr);
        assert.match(repaired.stdout, /^deleted \/relevo\/test\/leader/);
        members = await cluster.waitHealthy(NAMES, 60_000);
        primary = members.find((m) => m.state === 'primary')!.name;
        assert.equal((await listing(cluster, primary)).json.unreadable.length, 0);
      });

      await step('a corrupt member record of a running member: its agent rewrites it; the others go on', async () => {
        const revision = await cluster.store.put(keys.member(primary), '{not json');
        await waitFor(`${primary} to rewrite its member record`, async () => {
          const kv = await cluster.store.get(keys.member(primary));
          return kv && kv.revision > revision && (await cluster.status(primary))?.state === 'primary';
        }, 10_000, 100);
        await commitAcknowledged(cluster, primary, 'after corrupt member record');
      });

      await step('the primary\'s member record corrupt when it dies: a replica still takes over; list works; store repair fixes it', async () => {
        const old = primary;
        const timeline = (await cluster.status(old))!.timeline!;
        // As reported: the primary's member record damaged, then the primary's machine lost.
        await faults.kill(old, 'agent');
        await cluster.store.put(keys.member(old), '{not json');
        await faults.kill(old, 'postgres');
        const replicas = NAMES.filter((n) => n !== old);
        let listedDuringFailover = 0;
        const promoted = await waitFor('a replica to take over', async () => {
          const { json, table } = await listing(cluster, replicas[0]!);
          listedDuringFailover++;
          assert.ok(json.unreadable.some((r) => r.key === keys.member(old)), 'list shows the damaged record');
          assert.match(table, new RegExp(`${old} .*RECORD UNREADABLE`));
          return json.members.find((m) => replicas.includes(m.name) && m.role === 'primary' && m.state === 'primary' && (m.timeline ?? 0) > timeline);
        }, 60_000, 500);
        assert.ok(listedDuringFailover > 0);
        await commitAcknowledged(cluster, promoted.name, 'after failover', 20_000);
        const repaired = await cluster.cli(['store', 'repair', '--delete', `members/${old}`], promoted.name);
        assert.equal(repaired.code, 0, repaired.stderr);
        assert.match(repaired.stdout, new RegExp(`^deleted /relevo/test/members/${old} \\(revision \\d+, held "\\{not json": not JSON`));
        cluster.startAgent(old);
        await cluster.waitHealthy(NAMES, 90_000);
        assert.equal((await listing(cluster, promoted.name)).json.unreadable.length, 0);
      });
    } catch (error) {
      const text = await diagnostics(cluster);
      if (error instanceof Error) error.message = `${error.message}\n${text}`;
      throw error;
    }
  });
});
