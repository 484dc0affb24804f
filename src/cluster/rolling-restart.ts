import { OperationError } from './operations.js';
import type { ClusterSettings } from './settings.js';
import type { MemberStatus } from './types.js';
import { parseServerVersion, promotionVersionCheck } from './versions.js';
import type { ClusterRead, ClusterView } from './view.js';

/**
 * Rolling restart: replicas one at a time, each streaming again before the
 * next; then a normal switchover to a replica already restarted; then the
 * former primary, now a replica. It only drives existing operations (the
 * agent's restart, relevo's switchover), so a client on the router sees at
 * most the switchover's pause. Any failed step stops the roll; the primary is
 * only touched (by the switchover) once every replica is back.
 */

export type RollMode = 'pending' | 'all';

/** What the roll needs from outside: the cluster as read, and the two operations it drives. */
export interface RollDriver {
  read(): Promise<ClusterRead>;
  /** Asks the member's agent to restart its PostgreSQL (accepted, not finished). */
  restart(member: string): Promise<void>;
  /** A normal switchover to `to`, returning once `to` is the primary. */
  switchover(to: string): Promise<void>;
  /** Each step with its reason, as it starts and as it ends. */
  report(line: string): void;
  sleep(ms: number): Promise<void>;
  now(): number;
}

export interface RollOptions {
  mode: RollMode;
  /** Restrict the roll to these members (default: all). */
  members?: string[];
  /** How long one member may take to stream again after its restart. */
  stepTimeoutMs?: number;
}

/** A step failed: what, on which member, and the state the roll left the cluster in. */
export class RollError extends Error {
  readonly code = 'ROLL_STOPPED';
  constructor(message: string) {
    super(message);
    this.name = 'RollError';
  }
}

const needsRestart = (m: MemberStatus, mode: RollMode) => mode === 'all' || m.pendingRestart.length > 0;

const why = (m: MemberStatus, mode: RollMode) => (mode === 'all' ? 'restart of every member requested (--all)' : `parameters pending restart: ${m.pendingRestart.join(', ')}`);

/** A replica that streams from the primary now: the state a restarted replica must reach before the roll moves on. */
export function isStreamingReplica(m: MemberStatus | undefined, leader: string | undefined): boolean {
  return m !== undefined && m.role === 'replica' && m.state === 'replica' && m.streaming && m.upstream === leader && m.lagBytes !== null;
}

export interface RollPlan {
  leader: string;
  /** Replicas to restart first, in order. */
  replicas: string[];
  /** Whether the primary needs a restart too (switchover, then restart of the former primary). */
  primary: boolean;
  reasons: Map<string, string>;
}

/** Checks the request against the cluster and plans it; throws OperationError (changes nothing) when impossible. */
export function planRoll(view: ClusterRead['view'], settings: ClusterSettings, options: RollOptions): RollPlan {
  if (!view.reachable) throw new OperationError('STORE_UNREACHABLE', `cannot plan the roll: ${view.error}`);
  const names = view.members.map((m) => m.name);
  for (const name of options.members ?? []) {
    if (!names.includes(name)) throw new OperationError('UNKNOWN_MEMBER', `unknown member "${name}": known members are ${names.join(', ') || 'none'}`);
  }
  const leader = view.leader?.member;
  const primary = view.members.find((m) => m.name === leader);
  if (!leader || primary?.state !== 'primary') throw new OperationError('NO_PRIMARY', 'no healthy primary holds the leader lease: a rolling restart needs one; check `relevo list`');
  if (view.failover) throw new OperationError('OPERATION_IN_PROGRESS', `a ${view.failover.kind} is in progress (requested ${view.failover.requestedAt}); wait for it to finish`);
  const scope = view.members.filter((m) => options.members === undefined || options.members.includes(m.name));
  const targets = scope.filter((m) => needsRestart(m, options.mode));
  if (targets.length === 0) {
    throw new OperationError(
      'NOTHING_TO_ROLL',
      options.mode === 'pending' ? `nothing to do: no ${options.members ? 'named ' : ''}member has a parameter pending restart` : 'nothing to do: no member selected',
    );
  }
  for (const m of targets) {
    if (m.name !== leader && !isStreamingReplica(m, leader)) {
      throw new OperationError('NOT_A_RUNNING_REPLICA', `member ${m.name} is not a streaming replica (state ${m.state}): fix it first, a roll only restarts healthy members`);
    }
  }
  const restartsPrimary = targets.some((m) => m.name === leader);
  if (restartsPrimary) {
    if (settings.paused) throw new OperationError('CLUSTER_PAUSED', 'the cluster is paused and the primary needs a switchover: run `relevo resume` first');
    if (!view.members.some((m) => m.name !== leader && m.tags.nofailover !== true && isStreamingReplica(m, leader))) {
      throw new OperationError('NO_HEALTHY_CANDIDATE', `the primary ${leader} needs a restart but no streaming replica can take over: restarting it would be a write outage`);
    }
  }
  return {
    leader,
    replicas: targets.filter((m) => m.name !== leader).map((m) => m.name).sort(),
    primary: restartsPrimary,
    reasons: new Map(targets.map((m) => [m.name, why(m, options.mode)])),
  };
}

/**
 * The replica to switch over to: streaming, within maximumLagOnFailover, not
 * tagged nofailover, on the primary's major version; preferring the newest
 * minor version (a minor update moves forward), then members with nothing
 * pending (already rolled), then least lag.
 */
export function switchoverTarget(view: ClusterView, settings: ClusterSettings, leader: string): MemberStatus | undefined {
  const primary = view.members.filter((m) => m.name === leader);
  const minor = (m: MemberStatus) => parseServerVersion(m.postgresVersion)?.minor ?? -1;
  return view.members
    .filter((m) => m.name !== leader && m.tags.nofailover !== true && isStreamingReplica(m, leader) && m.lagBytes! <= settings.maximumLagOnFailover)
    .filter((m) => promotionVersionCheck(m, primary).refuse === undefined)
    .sort((a, b) => minor(b) - minor(a) || a.pendingRestart.length - b.pendingRestart.length || a.lagBytes! - b.lagBytes! || a.name.localeCompare(b.name))[0];
}

async function memberNow(driver: RollDriver, name: string) {
  const { view, settings } = await driver.read();
  if (!view.reachable) return { view: undefined, member: undefined, leader: undefined, settings };
  return { view, member: view.members.find((m) => m.name === name), leader: view.leader?.member, settings };
}

/** Restarts one replica through its agent and waits until it runs a new postmaster and streams again. */
async function restartReplica(driver: RollDriver, name: string, mode: RollMode, timeoutMs: number): Promise<void> {
  const before = await memberNow(driver, name);
  const oldPid = before.member?.postmasterPid ?? null;
  try {
    await driver.restart(name);
  } catch (error) {
    throw new RollError(`the agent of ${name} did not accept the restart: ${(error as Error).message}; the roll stops here`);
  }
  const deadline = driver.now() + timeoutMs;
  let last = before.member;
  while (driver.now() < deadline) {
    await driver.sleep(250);
    const { member, leader } = await memberNow(driver, name);
    if (member) last = member;
    if (member && member.postmasterPid !== null && member.postmasterPid !== oldPid && isStreamingReplica(member, leader)) {
      if (mode === 'pending' && member.pendingRestart.length > 0) {
        throw new RollError(`${name} restarted but still reports parameters pending restart (${member.pendingRestart.join(', ')}); the roll stops here`);
      }
      return;
    }
  }
  throw new RollError(
    `${name} is not streaming again ${Math.round(timeoutMs / 1000)} s after its restart (state ${last?.state ?? 'unknown'}: ${last?.reason ?? 'no status'}); ` +
      'the roll stops here, the primary was not touched; see its agent log',
  );
}

/** Waits until `name` is the primary and every member in `replicas` streams from it. */
async function awaitReplicasStreaming(driver: RollDriver, replicas: string[], timeoutMs: number): Promise<void> {
  const deadline = driver.now() + timeoutMs;
  for (;;) {
    const { view } = await driver.read();
    const leader = view.reachable ? view.leader?.member : undefined;
    const lagging = replicas.filter((r) => !isStreamingReplica(view.reachable ? view.members.find((m) => m.name === r) : undefined, leader));
    if (lagging.length === 0) return;
    if (driver.now() >= deadline) throw new RollError(`${lagging.join(', ')} not streaming from the primary ${leader ?? '(none)'} after ${Math.round(timeoutMs / 1000)} s; the roll stops here`);
    await driver.sleep(250);
  }
}

export interface RollResult {
  restarted: string[];
  switchedTo: string | null;
  formerPrimary: string | null;
}

export async function rollingRestart(driver: RollDriver, options: RollOptions): Promise<RollResult> {
  const timeoutMs = options.stepTimeoutMs ?? 120_000;
  const { view, settings } = await driver.read();
  const plan = planRoll(view, settings, options);
  const result: RollResult = { restarted: [], switchedTo: null, formerPrimary: null };
  const steps = plan.replicas.length + (plan.primary ? 2 : 0);
  let step = 0;
  const say = (text: string) => driver.report(`[${++step}/${steps}] ${text}`);
  for (const name of plan.replicas) {
    // The replicas that already rolled must still stream: never restart one while another is down.
    await awaitReplicasStreaming(driver, result.restarted, timeoutMs);
    say(`restarting replica ${name}: ${plan.reasons.get(name)}`);
    await restartReplica(driver, name, options.mode, timeoutMs);
    driver.report(`    ${name} streams again`);
    result.restarted.push(name);
  }
  if (!plan.primary) return result;
  await awaitReplicasStreaming(driver, result.restarted, timeoutMs);
  const now = await driver.read();
  if (!now.view.reachable || now.view.leader?.member !== plan.leader) {
    throw new RollError(`the primary changed during the roll (now ${now.view.reachable ? (now.view.leader?.member ?? 'none') : 'unknown'}); the roll stops here`);
  }
  const target = switchoverTarget(now.view, now.settings, plan.leader);
  if (!target) throw new RollError(`no streaming replica within maximumLagOnFailover to switch over to; the roll stops here with ${plan.leader} still the primary`);
  say(`switchover from ${plan.leader} to ${target.name}: the primary ${plan.leader} needs a restart (${plan.reasons.get(plan.leader)}), restarting it in place would stop writes`);
  try {
    await driver.switchover(target.name);
  } catch (error) {
    throw new RollError(`switchover to ${target.name} failed: ${(error as Error).message}; the roll stops here`);
  }
  result.switchedTo = target.name;
  result.formerPrimary = plan.leader;
  driver.report(`    ${target.name} is the primary`);
  await awaitReplicasStreaming(driver, [plan.leader], timeoutMs);
  const former = (await memberNow(driver, plan.leader)).member;
  // Demotion restarts the former primary's PostgreSQL, which may already apply what was pending.
  if (options.mode === 'pending' && former && former.pendingRestart.length === 0) {
    say(`${plan.leader} rejoined as a replica and nothing is pending any more: no further restart needed`);
  } else {
    say(`restarting former primary ${plan.leader}, now a replica: ${plan.reasons.get(plan.leader)}`);
    await restartReplica(driver, plan.leader, options.mode, timeoutMs);
    driver.report(`    ${plan.leader} streams again`);
  }
  result.restarted.push(plan.leader);
  return result;
}

/** Minutes since midnight UTC of an "HH:MM" string. */
function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return h! * 60 + m!;
}

/** Whether `now` falls in the window [start, end) in UTC; a window whose end is before its start wraps midnight. */
export function insideWindow(window: { start: string; end: string } | null, now: number): boolean {
  if (!window) return true;
  const at = Math.floor((now % 86_400_000) / 60_000);
  const start = minutesOf(window.start);
  const end = minutesOf(window.end);
  return start <= end ? at >= start && at < end : at >= start || at < end;
}

/**
 * The automatic rolling restart (settings.autoRestart), decided purely: only the
 * leader starts one, only when a member has parameters pending restart, inside
 * the window, with the cluster neither paused nor in a switchover, and only when
 * the roll as `relevo restart --pending` would plan it is possible now.
 */
export function autoRollDue(view: ClusterRead['view'], settings: ClusterSettings, me: string, now: number): { due: boolean; reason: string; plan?: RollPlan } {
  const auto = settings.autoRestart;
  if (!auto.pending) return { due: false, reason: 'autoRestart.pending is off' };
  if (!view.reachable) return { due: false, reason: `store unreachable: ${view.error}` };
  if (view.leader?.member !== me) return { due: false, reason: 'only the leader rolls' };
  if (settings.paused) return { due: false, reason: 'cluster paused' };
  if (view.failover) return { due: false, reason: `a ${view.failover.kind} is in progress` };
  const pending = view.members.filter((m) => m.pendingRestart.length > 0);
  if (pending.length === 0) return { due: false, reason: 'no member has parameters pending restart' };
  if (!insideWindow(auto.window, now)) return { due: false, reason: `outside autoRestart.window ${auto.window!.start}-${auto.window!.end} UTC` };
  try {
    const plan = planRoll(view, settings, { mode: 'pending' });
    const names = pending.map((m) => `${m.name} (${m.pendingRestart.join(', ')})`).join('; ');
    return { due: true, reason: `parameters pending restart on ${names}: rolling them out (autoRestart.pending)`, plan };
  } catch (error) {
    if (error instanceof OperationError) return { due: false, reason: `not possible now: ${error.message}` };
    throw error;
  }
}
