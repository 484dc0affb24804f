/**
 * Rolling restart on a real 3-member cluster under a write load: a
 * restart-requiring parameter (shared_buffers) set with `relevo config set`,
 * shown as pending, then rolled out by `relevo restart --pending`; then a roll
 * whose first replica cannot start stops with the primary untouched.
 */
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FAULT_TEST_MEMBERS, FAULT_TEST_SETTINGS, TestCluster } from '../helpers/cluster.js';
import { waitFor } from '../helpers/wait.js';
import { Writer } from '../helpers/writer.js';

const NAMES = FAULT_TEST_MEMBERS;

/** The CLI with a longer timeout: a whole roll takes several restarts and a switchover. */
const relevo = (cluster: TestCluster, args: string[]) => cluster.cli(args, undefined, 300_000);

async function diagnostics(cluster: TestCluster): Promise<string> {
  const statuses = await cluster.memberStatuses().catch(() => []);
  return NAMES.map((n) => {
    const s = statuses.find((m) => m.name === n);
    return `--- ${n}: ${s ? `state=${s.state} role=${s.role} streaming=${s.streaming} pending=${s.pendingRestart.join(',')} reason=${s.reason}` : 'no status'}\n${cluster.logTail(n, 25)}`;
  }).join('\n');
}

async function pendingEverywhere(cluster: TestCluster, parameter: string): Promise<void> {
  await waitFor(`${parameter} pending restart on every member`, async () => {
    const all = await cluster.memberStatuses();
    return all.length === NAMES.length && all.every((m) => m.pendingRestart.includes(parameter));
  }, 30_000);
}

test('rolling restart applies a restart-requiring parameter under writes; a failed step stops the roll', { timeout: 360_000 }, async (t) => {
  const cluster = await TestCluster.create({ store: 'embedded', settings: FAULT_TEST_SETTINGS });
  let writer: Writer | undefined;
  t.after(async () => {
    await writer?.stop().catch(() => undefined);
    await cluster.destroy();
  });
  // Restarts go through each agent's state-changing API, which needs api.auth.
  const passwordFile = join(cluster.dir, 'api-password');
  writeFileSync(passwordFile, 'roll-Me-3\n', { mode: 0o600 });
  for (const name of NAMES) await cluster.defineMember(name, { api: { auth: { username: 'ops', password: { file: passwordFile } } } });
  for (const name of NAMES) cluster.startAgent(name);

  try {
    const members = await cluster.waitHealthy(NAMES, 90_000);
    const primary = members.find((m) => m.state === 'primary')!.name;
    writer = Writer.forCluster(cluster, 'rolling_writes');
    await writer.start();
    await writer.waitForAcks(50);

    const nothing = await relevo(cluster, ['restart', '--pending']);
    assert.equal(nothing.code, 2, `nothing pending: ${nothing.stderr}`);
    assert.match(nothing.stderr, /\[NOTHING_TO_ROLL\]/);

    const set = await relevo(cluster, ['config', 'set', 'postgresql.shared_buffers=32MB']);
    assert.equal(set.code, 0, set.stderr);
    await pendingEverywhere(cluster, 'shared_buffers');

    const list = await relevo(cluster, ['list']);
    assert.match(list.stdout, /pending restart on node1, node2, node3/);
    assert.match(list.stdout, /\* shared_buffers/);
    assert.doesNotMatch(list.stdout, /MIXED/);
    const json = JSON.parse((await relevo(cluster, ['list', '--json'])).stdout) as { pendingRestart: string[]; versions: string[] };
    assert.deepEqual(json.pendingRestart, NAMES);
    assert.equal(json.versions.length, 1);

    const past = await relevo(cluster, ['restart', '--pending', '--at', '2020-01-01T00:00:00Z']);
    assert.equal(past.code, 2);
    assert.match(past.stderr, /\[BAD_TIME\]/);
    const unknown = await relevo(cluster, ['restart', '--pending', 'nosuch']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /\[UNKNOWN_MEMBER\]/);

    const started = Date.now();
    const roll = await relevo(cluster, ['restart', '--pending']);
    const elapsed = Date.now() - started;
    assert.equal(roll.code, 0, `roll failed: ${roll.stdout}\n${roll.stderr}`);
    console.log(roll.stdout.trimEnd().replace(/^/gm, '# '));
    assert.match(roll.stdout, /switchover from /);

    const after = await cluster.waitHealthy(NAMES, 60_000);
    const newPrimary = after.find((m) => m.state === 'primary')!.name;
    assert.notEqual(newPrimary, primary, 'the primary moved by switchover');
    for (const name of NAMES) {
      const [row] = await cluster.sql<{ sb: string; pending: number }>(
        name,
        `SELECT current_setting('shared_buffers') AS sb, (SELECT count(*)::int FROM pg_settings WHERE pending_restart AND name NOT LIKE 'recovery\\_target%') AS pending`,
      );
      assert.deepEqual(row, { sb: '32MB', pending: 0 }, `${name} runs the new value with nothing pending`);
    }
    await waitFor('no member reports a pending restart', async () => (await cluster.memberStatuses()).every((m) => m.pendingRestart.length === 0), 15_000);

    await writer.waitForAcks(20, 30_000, newPrimary);
    const gap = writer.longestGap(started, started + elapsed);
    const errors = writer.failures.filter((f) => f.at >= started && f.at <= started + elapsed).length;
    console.log(`# rolling restart of 3 members: ${(elapsed / 1000).toFixed(1)} s total (CLI process), longest write pause ${gap} ms, ${errors} client errors (measured under load)`);

    // A failure midway: the first replica in the roll cannot start PostgreSQL again.
    const set2 = await relevo(cluster, ['config', 'set', 'postgresql.shared_buffers=48MB']);
    assert.equal(set2.code, 0, set2.stderr);
    await pendingEverywhere(cluster, 'shared_buffers');
    const victim = NAMES.filter((n) => n !== newPrimary).sort()[0]!;
    const conf = join(cluster.member(victim).config.postgres.dataDir, 'postgresql.conf');
    // Read at startup only (a reload with an invalid file changes nothing): the restart fails, the server stays down.
    appendFileSync(conf, `\nshared_buffers = 'not-a-size'  # relevo rolling-restart test: broken on purpose\n`);
    const failed = await relevo(cluster, ['restart', '--pending', '--step-timeout', '20']);
    assert.equal(failed.code, 1, `a failed step exits 1: ${failed.stdout}\n${failed.stderr}`);
    assert.match(failed.stderr, new RegExp(`rolling restart stopped: ${victim} is not streaming again`));
    assert.match(failed.stderr, /\[ROLL_STOPPED\]/);
    assert.doesNotMatch(failed.stdout, /switchover/);
    const statuses = await cluster.memberStatuses();
    const leaderNow = statuses.find((m) => m.state === 'primary');
    assert.equal(leaderNow?.name, newPrimary, 'the primary is untouched');
    assert.ok(leaderNow!.pendingRestart.includes('shared_buffers'), 'the primary was not restarted');
    assert.match(readFileSync(conf, 'utf8'), /not-a-size/);

    await writer.waitForAcks(20, 30_000, newPrimary);
    await writer.stop();
    const result = await writer.verify(cluster);
    assert.deepEqual(result.lost, [], 'no acknowledged write is lost');
    console.log(`# writer: ${result.acknowledged} acknowledged, none lost`);
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${await diagnostics(cluster)}`, { cause: error });
  }
});
