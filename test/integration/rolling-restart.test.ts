/**
 * Rolling restart on a real 3-member cluster under a write load through
 * relevo's router: a restart-requiring parameter (shared_buffers) set with
 * `relevo config set`, shown as pending (and left alone while autoRestart is
 * off), then rolled out by `relevo restart --pending`; then a roll whose first
 * replica cannot start stops with the primary untouched; then, with
 * autoRestart.pending on, the leader rolls what is left by itself.
 */
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FAULT_TEST_MEMBERS, FAULT_TEST_SETTINGS, TestCluster } from '../helpers/cluster.js';
import { TICK_MS as AUTO_ROLL_TICK_MS } from '../../src/agent/auto-roll.js';
import { routedWriter } from '../helpers/minor-update.js';
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

async function postmasterPids(cluster: TestCluster): Promise<Record<string, number | null>> {
  const all = await cluster.memberStatuses();
  return Object.fromEntries(NAMES.map((n) => [n, all.find((m) => m.name === n)?.postmasterPid ?? null]));
}

/** Every member runs shared_buffers = `value` with nothing pending, in PostgreSQL and in its reported status. */
async function everyMemberRuns(cluster: TestCluster, value: string): Promise<void> {
  for (const name of NAMES) {
    const [row] = await cluster.sql<{ sb: string; pending: number }>(
      name,
      `SELECT current_setting('shared_buffers') AS sb, (SELECT count(*)::int FROM pg_settings WHERE pending_restart AND name NOT LIKE 'recovery\\_target%') AS pending`,
    );
    assert.deepEqual(row, { sb: value, pending: 0 }, `${name} runs the new value with nothing pending`);
  }
  await waitFor('no member reports a pending restart', async () => (await cluster.memberStatuses()).every((m) => m.pendingRestart.length === 0), 15_000);
}

async function pendingEverywhere(cluster: TestCluster, parameter: string): Promise<void> {
  await waitFor(`${parameter} pending restart on every member`, async () => {
    const all = await cluster.memberStatuses();
    return all.length === NAMES.length && all.every((m) => m.pendingRestart.includes(parameter));
  }, 30_000);
}

/** Client errors and the longest pause of the routed writer inside [from, to]. */
function impact(writer: Writer, from: number, to: number) {
  return { gap: writer.longestGap(from, to), errors: writer.failures.filter((f) => f.at >= from && f.at <= to).length };
}

/** At most this many client errors per roll through the router: the switchover cuts the sessions once (measured: 1 per roll). */
const MAX_ROLL_ERRORS = 5;

test('rolling restart applies a restart-requiring parameter under writes through the router; a failed step stops the roll; autoRestart rolls by itself', { timeout: 420_000 }, async (t) => {
  const cluster = await TestCluster.create({ store: 'embedded', settings: FAULT_TEST_SETTINGS });
  let writer: Writer | undefined;
  let stopRouter: (() => Promise<void>) | undefined;
  t.after(async () => {
    await writer?.stop().catch(() => undefined);
    await stopRouter?.().catch(() => undefined);
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
    const routed = await routedWriter(cluster, 'rolling_writes');
    writer = routed.writer;
    stopRouter = () => routed.router.stop();
    await writer.start();
    await writer.waitForAcks(50);

    const nothing = await relevo(cluster, ['restart', '--pending']);
    assert.equal(nothing.code, 2, `nothing pending: ${nothing.stderr}`);
    assert.match(nothing.stderr, /\[NOTHING_TO_ROLL\]/);

    const set = await relevo(cluster, ['config', 'set', 'postgresql.shared_buffers=32MB']);
    assert.equal(set.code, 0, set.stderr);
    await pendingEverywhere(cluster, 'shared_buffers');
    // autoRestart is off by default: nothing restarts by itself, checked across a whole auto-roll check period.
    const pendingSince = Date.now();
    const pidsBefore = await postmasterPids(cluster);

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

    const idle = AUTO_ROLL_TICK_MS + 2_000 - (Date.now() - pendingSince);
    if (idle > 0) await new Promise((resolve) => setTimeout(resolve, idle));
    assert.deepEqual(await postmasterPids(cluster), pidsBefore, 'autoRestart off: no member restarted by itself');
    await pendingEverywhere(cluster, 'shared_buffers');

    const started = Date.now();
    const roll = await relevo(cluster, ['restart', '--pending']);
    const elapsed = Date.now() - started;
    assert.equal(roll.code, 0, `roll failed: ${roll.stdout}\n${roll.stderr}`);
    console.log(roll.stdout.trimEnd().replace(/^/gm, '# '));
    assert.match(roll.stdout, /switchover from /);

    const after = await cluster.waitHealthy(NAMES, 60_000);
    const newPrimary = after.find((m) => m.state === 'primary')!.name;
    assert.notEqual(newPrimary, primary, 'the primary moved by switchover');
    await everyMemberRuns(cluster, '32MB');

    await writer.waitForAcks(20, 30_000);
    const manual = impact(writer, started, started + elapsed);
    console.log(`# rolling restart of 3 members through the router: ${(elapsed / 1000).toFixed(1)} s total (CLI process), longest write pause ${manual.gap} ms, ${manual.errors} client errors (measured under load)`);
    assert.ok(manual.errors <= MAX_ROLL_ERRORS, `router writer: ${manual.errors} client errors during the roll (at most ${MAX_ROLL_ERRORS}): ${writer.lastFailures()}`);

    // A failure midway: the first replica in the roll cannot start PostgreSQL again.
    const set2 = await relevo(cluster, ['config', 'set', 'postgresql.shared_buffers=48MB']);
    assert.equal(set2.code, 0, set2.stderr);
    await pendingEverywhere(cluster, 'shared_buffers');
    const victim = NAMES.filter((n) => n !== newPrimary).sort()[0]!;
    const conf = join(cluster.member(victim).config.postgres.dataDir, 'postgresql.conf');
    const broken = `\nshared_buffers = 'not-a-size'  # relevo rolling-restart test: broken on purpose\n`;
    // Read at startup only (a reload with an invalid file changes nothing): the restart fails, the server stays down.
    appendFileSync(conf, broken);
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

    // The operator repairs the replica (its agent starts it again, on 48MB), then turns autoRestart on:
    // the leader rolls the rest (the other replica, a switchover, the former primary) with no restart command.
    writeFileSync(conf, readFileSync(conf, 'utf8').replace(broken, ''));
    await cluster.waitHealthy(NAMES, 90_000);
    const autoStarted = Date.now();
    const on = await relevo(cluster, ['config', 'set', 'autoRestart.pending=true']);
    assert.equal(on.code, 0, on.stderr);
    await waitFor('the leader rolled every member onto 48MB by itself', async () => {
      const all = await cluster.memberStatuses();
      return all.length === NAMES.length && all.every((m) => m.pendingRestart.length === 0 && (m.state === 'primary' || m.state === 'replica')) && all.some((m) => m.state === 'primary' && m.name !== newPrimary);
    }, 120_000);
    // The roll ends (and says so) a moment after the former primary streams again.
    const rolledBy = () => NAMES.find((n) => /automatic rolling restart done/.test(cluster.logTail(n, 100_000)));
    await waitFor('an agent logged the end of the automatic roll', async () => rolledBy() !== undefined, 60_000);
    const rolled = rolledBy()!;
    assert.equal(rolled, newPrimary, 'the leader of the time ran the automatic roll');
    // Its steps, with their reasons, as that agent logged them.
    for (const line of cluster.logTail(rolled, 100_000).split('\n')) {
      if (line.startsWith('{') && line.includes('"autoRestart":true')) console.log(`# ${rolled}: ${(JSON.parse(line) as { msg: string }).msg}`);
    }
    await cluster.waitHealthy(NAMES, 60_000);
    await everyMemberRuns(cluster, '48MB');
    const autoEnded = Date.now();
    await writer.waitForAcks(20, 30_000);
    const auto = impact(writer, autoStarted, autoEnded);
    console.log(`# automatic rolling restart (autoRestart.pending) through the router: longest write pause ${auto.gap} ms, ${auto.errors} client errors (measured under load)`);
    assert.ok(auto.errors <= MAX_ROLL_ERRORS, `router writer: ${auto.errors} client errors during the automatic roll (at most ${MAX_ROLL_ERRORS}): ${writer.lastFailures()}`);

    await writer.stop();
    const result = await writer.verify(cluster);
    assert.deepEqual(result.lost, [], 'no acknowledged write is lost');
    console.log(`# writer through the router: ${result.acknowledged} acknowledged, ${writer.failures.length} client errors in all, none lost`);
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${await diagnostics(cluster)}`, { cause: error });
  }
});
