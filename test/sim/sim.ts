/**
 * Deterministic simulation of a relevo cluster: the real decide() of every
 * agent, its actions carried out on the model of test/sim/model.ts (never
 * through src/agent/effects.ts), under a seeded schedule of faults. The
 * invariants of the product brief are checked at every step.
 */
import type { Action } from '../../src/agent/actions.js';
import { decide, type Decision } from '../../src/agent/decide.js';
import { freshMemory, type AgentMemory, type Observation, type OperatorRequest, type PeerView, type StoreView } from '../../src/agent/observation.js';
import { failureCode, type ActionOutcome } from '../../src/agent/outcome.js';
import type { AgentState } from '../../src/agent/states.js';
import { givenAfterRead, holdDeadline, mayConfirm, membershipAfterRead, type FailsafeView } from '../../src/agent/failsafe.js';
import { memberStatus } from '../../src/agent/status.js';
import { defaultClusterSettings, type ClusterSettings } from '../../src/cluster/settings.js';
import type { FailoverRequest, HistoryEntry, QuorumRecord, InitRecord, LeaderRecord, MemberStatus, Optime, SlotRegistry, SyncRecord } from '../../src/cluster/types.js';
import type { MemberConfig } from '../../src/config/member.js';
import { canFollow, inspect, lsnPosition, lsnText, parseStandbyNames, Rng, SimPostgres, SimStore, type Timeline } from './model.js';

/** Simulated time per step. */
export const TICK_MS = 100;
/** After the last fault heals, the cluster must have one primary and every member streaming within this. */
export const LIVENESS_BOUND_MS = 90_000;
const SYSTEM_ID = '7000000000000000042';

export type FaultKind =
  | 'crashPostgres'
  | 'hangPostgres'
  | 'restartAgent'
  | 'storeOutage'
  | 'storeCut'
  | 'storeCutRequests'
  | 'storeCutResponses'
  | 'storeLoss'
  | 'storeDelay'
  | 'partition'
  | 'clockStep'
  | 'switchover'
  | 'operatorRestart'
  | 'operatorReinit'
  | 'slowReplica'
  | 'killNode'
  /** The operator switches synchronousMode to quorum (variant 'quorum-loss'). */
  | 'setQuorumMode';

export interface Fault {
  at: number;
  kind: FaultKind;
  member: string;
  /** How long it lasts (ms), for faults that last; the clock step (ms) for clockStep. */
  ms: number;
  /** switchover: target member or null. */
  to?: string | null;
  /**
   * Resolved when the fault starts (variant 'sync-loss'): the leader, a member of
   * the sync record, or a standby that is neither; `member` is the fallback.
   */
  role?: 'primary' | 'sync' | 'async';
  /** Armed at `at`; starts this many steps after the sync record next changes (variant 'sync-loss'). */
  onSyncChange?: number;
}

export interface Schedule {
  seed: number;
  members: string[];
  settings: ClusterSettings;
  /** Monotonic clock rate per member (1 ± at most 0.5 %). */
  drift: Record<string, number>;
  faults: Fault[];
  /** Steps during which faults may start; everything is healed at the end of it. */
  faultSteps: number;
  /** Chance that a client commits on each primary in a step (default 0.6). */
  writeChance?: number;
}

export interface Violation {
  kind: 'defect' | 'two-acknowledging' | 'former-primary-acknowledged' | 'lost-commit' | 'liveness' | 'crash';
  step: number;
  message: string;
}

export interface RunResult {
  seed: number;
  steps: number;
  violation?: Violation;
  /** `from>to actions` for every edge taken (state changes, and actions taken while staying). */
  edges: Set<string>;
  trace: string[];
  acknowledged: number;
  failovers: number;
  agentDownWindows: number;
  unacknowledgedFormerWrites: number;
  /** Rounds in which every member confirmed a primary that could not reach the store (failsafe holding). */
  failsafeRounds: number;
}

// ---------------------------------------------------------------- schedules

const FAULTS: FaultKind[] = [
  'crashPostgres',
  'crashPostgres',
  'hangPostgres',
  'restartAgent',
  'storeOutage',
  'storeCut',
  'storeCutRequests',
  'storeCutResponses',
  'storeLoss',
  'storeDelay',
  'partition',
  'partition',
  'clockStep',
  'switchover',
  'switchover',
  'operatorRestart',
  'operatorReinit',
];

/**
 * Variants beside the default mix: 'quorum' turns the synchronous schedules into
 * synchronousMode: quorum (ANY k) and 'failsafe' turns store failsafe on. Drawn
 * from their own generator, so the default schedules (and the regression seeds) stay as they were.
 */
export type ScheduleVariant = 'default' | 'quorum' | 'failsafe' | 'sync-loss' | 'quorum-loss';

/** The schedule of seed `seed`: settings, clocks and faults, all drawn up front so a subset can be replayed. */
export function makeSchedule(seed: number, faultSteps: number, variant: ScheduleVariant = 'default'): Schedule {
  const schedule = makeDefaultSchedule(seed, faultSteps);
  if (variant === 'default') return schedule;
  if (variant === 'sync-loss') return makeSyncLossSchedule(seed, faultSteps, schedule);
  if (variant === 'quorum-loss') return makeQuorumLossSchedule(seed, faultSteps, makeSyncLossSchedule(seed, faultSteps, schedule));
  const rng = new Rng(seed * 104_729 + 3);
  const settings = { ...schedule.settings };
  if (variant === 'quorum') {
    settings.synchronousMode = 'quorum';
    settings.synchronousCount = rng.int(1, Math.max(1, schedule.members.length - 1));
  } else {
    settings.failsafe = true;
    if (rng.chance(0.5)) {
      settings.synchronousMode = 'quorum';
      settings.synchronousCount = 1;
    }
  }
  // Store outages (what failsafe is for), with what may meet them: a partition, an agent restart, a crash.
  const faults = [...schedule.faults];
  const first = Math.min(150, Math.floor(faultSteps / 2));
  for (let i = rng.int(1, 3); i > 0; i--) {
    const kind = rng.pick(['storeOutage', 'storeOutage', 'storeCut', 'partition', 'restartAgent', 'crashPostgres'] as const);
    const member = rng.pick(schedule.members);
    faults.push({ at: rng.int(first, Math.max(first, faultSteps - 1)), kind, member, ms: rng.int(1, 150) * TICK_MS });
  }
  faults.sort((x, y) => x.at - y.at);
  return { ...schedule, settings, faults: variant === 'failsafe' ? faults : schedule.faults };
}

/**
 * Synchronous mode \`on\`, FIRST 1: the synchronous standby is lost while the
 * replacement lags (its replication slowed), and the primary's node dies 0–15
 * steps after the sync record next changes, i.e. inside the replacement's
 * catch-up (docs/reliability.md, "the sync record during a change"). Half the
 * seeds add the default schedule's random faults on top.
 */
function makeSyncLossSchedule(seed: number, faultSteps: number, base: Schedule): Schedule {
  const rng = new Rng(seed * 15_485_863 + 7);
  const members = rng.chance(0.25) ? ['a', 'b', 'c', 'd'] : ['a', 'b', 'c'];
  const settings: ClusterSettings = { ...base.settings, synchronousMode: 'on', synchronousStrict: false, synchronousCount: 1, failsafe: false };
  const first = Math.min(150, Math.floor(faultSteps / 2));
  const slowAt = rng.int(first, first + 50);
  const lossAt = slowAt + rng.int(5, 60);
  const faults: Fault[] = [
    { at: slowAt, kind: 'slowReplica', member: 'c', role: 'async', ms: rng.int(100, 600) * TICK_MS },
    { at: lossAt, kind: rng.pick(['partition', 'killNode', 'crashPostgres'] as const), member: 'b', role: 'sync', ms: rng.int(20, 300) * TICK_MS },
    { at: lossAt, kind: 'killNode', member: 'a', role: 'primary', ms: rng.int(30, 300) * TICK_MS, onSyncChange: rng.int(0, 15) },
  ];
  const extra = rng.chance(0.5) ? base.faults.filter((f) => members.includes(f.member) && (f.to === undefined || f.to === null || members.includes(f.to))) : [];
  const all = [...faults, ...extra].sort((x, y) => x.at - y.at);
  const drift: Record<string, number> = {};
  for (const m of members) drift[m] = base.drift[m] ?? 1 + (rng.next() - 0.5) * 0.01;
  return { seed, members, settings, drift, faults: all, faultSteps: Math.max(faultSteps, lossAt + 350), writeChance: 0.8 };
}

/**
 * The sync-loss schedule in synchronousMode quorum (ANY k, k drawn from 1..n-1):
 * a member of the quorum record is lost while another standby lags, and the
 * primary's node dies 0–15 steps after the quorum record next changes (e.g. the
 * record {provisional standbys, q=1} a promotion writes, or the grow/shrink steps
 * of src/agent/quorum.ts). Half the seeds switch from \`on\` to quorum mid-run instead.
 */
function makeQuorumLossSchedule(seed: number, faultSteps: number, loss: Schedule): Schedule {
  const rng = new Rng(seed * 32_452_843 + 11);
  const settings: ClusterSettings = { ...loss.settings, synchronousMode: 'quorum', synchronousCount: rng.int(1, loss.members.length - 1) };
  const faults: Fault[] = [...loss.faults];
  if (rng.chance(0.5)) {
    // Start in \`on\` and switch to quorum near the loss (the sync record may be changing then).
    const lossAt = loss.faults.find((f) => f.role === 'primary')!.at;
    faults.push({ at: Math.max(1, lossAt + rng.int(-20, 5)), kind: 'setQuorumMode', member: loss.members[0]!, ms: 0 });
    faults.sort((x, y) => x.at - y.at);
    return { ...loss, settings: { ...settings, synchronousMode: 'on' }, faults };
  }
  return { ...loss, settings, faults };
}

function makeDefaultSchedule(seed: number, faultSteps: number): Schedule {
  const rng = new Rng(seed * 7919 + 1);
  const members = rng.chance(0.15) ? ['a', 'b'] : rng.chance(0.15) ? ['a', 'b', 'c', 'd'] : ['a', 'b', 'c'];
  const mode = rng.pick(['strict', 'on', 'off'] as const);
  const settings: ClusterSettings = {
    ...defaultClusterSettings(),
    synchronousMode: mode === 'off' ? 'off' : 'on',
    synchronousStrict: mode === 'strict',
    synchronousFallbackMs: rng.pick([5_000, 30_000]),
    primaryRestartTimeoutMs: rng.pick([5_000, 30_000]),
    ...(rng.chance(0.3) ? { ttlMs: 3_000, fenceMarginMs: 1_000, loopWaitMs: 500 } : {}),
  };
  const drift: Record<string, number> = {};
  for (const m of members) drift[m] = 1 + (rng.next() - 0.5) * 0.01;
  const faults: Fault[] = [];
  const count = rng.int(0, Math.max(1, Math.round(faultSteps / 60)));
  // Faults start after the cluster had time to bootstrap.
  const first = Math.min(150, Math.floor(faultSteps / 2));
  for (let i = 0; i < count; i++) {
    const kind = rng.pick(FAULTS);
    const at = rng.int(first, Math.max(first, faultSteps - 1));
    const member = rng.pick(members);
    const ms = kind === 'clockStep' ? rng.pick([-1, 1]) * rng.int(1_000, 120_000) : rng.int(1, 150) * TICK_MS;
    faults.push({ at, kind, member, ms, to: kind === 'switchover' ? rng.pick([null, ...members]) : undefined });
  }
  faults.sort((x, y) => x.at - y.at);
  return { seed, members, settings, drift, faults, faultSteps };
}

// ---------------------------------------------------------------- the world

interface Agent {
  name: string;
  alive: boolean;
  state: AgentState;
  since: number;
  memory: AgentMemory;
  outcomes: ActionOutcome[];
  lease: number | undefined;
  leaseRenewedAt: number | undefined;
  operatorRequest: OperatorRequest | undefined;
  status: MemberStatus | undefined;
  nextCycle: number;
  /** Actions decided but landing later (a slow store or SQL round trip). */
  inFlight: { at: number; decision: Decision; observation: Observation } | undefined;
  clockOffset: number;
  /** As src/agent/agent.ts: the last observation saw PostgreSQL run as primary, so the fence watchdog is armed. */
  runsAsPrimary: boolean;
  /** The agent process was restarted by a fault (PostgreSQL ran on without it meanwhile). */
  restarted: boolean;
  /** Leaders this agent process has seen in the store. */
  sawLeaders: Set<string>;
  /** Store failsafe, as src/agent/agent.ts keeps it: membership and leader from the last store read, confirmations held and given. */
  failsafe: { membership: string[]; lastLeader: string | undefined; confirmedAt: Map<string, number>; ended: boolean; given: { leader: string; at: number } | undefined };
}

interface Ack {
  id: number;
  member: string;
  lsn: number;
  synchronous: boolean;
}

const KEYS = {
  init: 'initialize',
  leader: 'leader',
  sync: 'sync',
  quorum: 'quorum',
  history: 'history',
  optime: 'optime',
  failover: 'failover',
  slots: 'slots',
  member: (name: string) => `members/${name}`,
};

class Failure extends Error {
  constructor(
    message: string,
    readonly retryable = true,
  ) {
    super(message);
  }
}

class LostCas extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(message);
  }
}

export class World {
  readonly rng: Rng;
  readonly store = new SimStore();
  readonly pg = new Map<string, SimPostgres>();
  readonly agents = new Map<string, Agent>();
  step = 0;
  trueTime = 0;
  private nextRecord = 1;
  private nextTimeline = 1;
  private active: Fault[] = [];
  readonly edges = new Set<string>();
  readonly trace: string[] = [];
  private lastAck: Ack | undefined;
  private lastAckStep = -1;
  private lastAckTime: number | undefined;
  /** Time between consecutive acknowledgements (for the write pause of a switchover). */
  readonly ackGaps: { at: number; ms: number; from: string; to: string }[] = [];
  /** Per member, the last acknowledgement by another member when it began its current run of acknowledgements. */
  private lastSyncAck: Ack | undefined;
  acknowledged = 0;
  failovers = 0;
  violation: Violation | undefined;
  private healthySince: number | undefined;

  constructor(
    readonly schedule: Schedule,
    private readonly traceAll = false,
  ) {
    this.rng = new Rng(schedule.seed);
    for (const name of schedule.members) {
      this.pg.set(name, new SimPostgres());
      this.agents.set(name, this.freshAgent(name, this.rng.int(0, 10) * TICK_MS));
    }
  }

  private freshAgent(name: string, firstCycle: number): Agent {
    return {
      name,
      alive: true,
      state: 'starting',
      since: 0,
      memory: freshMemory(),
      outcomes: [],
      lease: undefined,
      leaseRenewedAt: undefined,
      operatorRequest: undefined,
      status: undefined,
      nextCycle: this.trueTime + firstCycle,
      inFlight: undefined,
      clockOffset: this.agents.get(name)?.clockOffset ?? 0,
      runsAsPrimary: false,
      restarted: this.agents.has(name),
      sawLeaders: new Set(),
      failsafe: { membership: [], lastLeader: undefined, confirmedAt: new Map(), ended: false, given: undefined },
    };
  }

  private log(line: string): void {
    this.trace.push(`[${(this.trueTime / 1000).toFixed(1)}s step ${this.step}] ${line}`);
    if (this.trace.length > 4000) this.trace.splice(0, 1000);
  }

  // ---------------------------------------------------------------- clocks and network

  private monotonic(name: string): number {
    return this.trueTime * this.schedule.drift[name]!;
  }
  private wallClock(name: string): number {
    return Date.parse('2026-06-01T00:00:00Z') + this.monotonic(name) + this.agents.get(name)!.clockOffset;
  }
  private faultOn(kind: FaultKind, name?: string): boolean {
    return this.active.some((f) => f.kind === kind && (name === undefined || f.member === name));
  }
  /** Whether a request from `name` reaches the store (its effect happens). */
  private storeRequest(name: string): boolean {
    if (this.faultOn('storeOutage') || this.faultOn('storeCut', name) || this.faultOn('storeCutRequests', name)) return false;
    return !(this.faultOn('storeLoss', name) && this.rng.chance(0.3));
  }
  /** Whether the answer comes back. */
  private storeResponse(name: string): boolean {
    return !this.faultOn('storeCutResponses', name);
  }
  private linked(a: string, b: string): boolean {
    if (a === b) return true;
    return !this.active.some((f) => f.kind === 'partition' && (f.member === a || f.member === b));
  }

  // ---------------------------------------------------------------- the step

  private nextFault = 0;

  run(steps: number): void {
    const faults = this.schedule.faults;
    for (; this.step < steps && !this.violation; this.step++) {
      this.trueTime = this.step * TICK_MS;
      while (this.nextFault < faults.length && faults[this.nextFault]!.at <= this.step) this.startFault(faults[this.nextFault++]!);
      this.fireArmed();
      for (const f of this.active) if (f.at * TICK_MS + f.ms <= this.trueTime) this.endFault(f);
      this.active = this.active.filter((f) => f.at * TICK_MS + f.ms > this.trueTime);
      if (this.step === this.schedule.faultSteps) this.healAll();
      this.store.expire(this.trueTime);
      this.wakeWatchers();
      for (const agent of this.agents.values()) {
        if (!agent.alive) continue;
        this.failsafeRound(agent);
        this.watchdog(agent);
        if (agent.inFlight && agent.inFlight.at <= this.trueTime) this.land(agent);
        if (!agent.inFlight && agent.nextCycle <= this.trueTime) this.cycle(agent);
        if (this.violation) return;
      }
      this.replicate();
      this.clients();
      if (this.step >= this.schedule.faultSteps) this.checkLiveness();
    }
  }

  /** Faults waiting for the sync record to change: the revision they saw when armed, and the step the change was seen. */
  private armed: { fault: Fault; revision: number | undefined; changedAt: number | undefined }[] = [];

  /** The record a role-relative fault watches: the quorum record in quorum mode, else the sync record. */
  private watchedKey(): string {
    return this.schedule.settings.synchronousMode === 'quorum' ? KEYS.quorum : KEYS.sync;
  }

  private fireArmed(): void {
    const revision = this.store.get(this.watchedKey())?.revision;
    for (const a of this.armed) {
      if (a.changedAt === undefined && revision !== a.revision) {
        a.changedAt = this.step;
        this.log(`${this.watchedKey()} record changed: ${JSON.stringify(this.store.get(this.watchedKey())?.value)}`);
      }
    }
    const due = this.armed.filter((a) => a.changedAt !== undefined && this.step >= a.changedAt + a.fault.onSyncChange!);
    this.armed = this.armed.filter((a) => !due.includes(a));
    for (const a of due) this.startFault({ ...a.fault, at: this.step, onSyncChange: undefined });
  }

  /** The member a role-relative fault hits now, or its fallback member. */
  private resolveRole(f: Fault): string {
    const leader = (this.store.get(KEYS.leader)?.value as LeaderRecord | undefined)?.member;
    const sync = this.store.get(this.watchedKey())?.value as { leader: string; members: string[] } | undefined;
    const inSync = sync && sync.leader === leader ? sync.members : [];
    const pick = (names: string[]) => (names.includes(f.member) ? f.member : names[0]) ?? f.member;
    if (f.role === 'primary') return leader ?? f.member;
    if (f.role === 'sync') return pick(inSync);
    return pick(this.schedule.members.filter((m) => m !== leader && !inSync.includes(m)));
  }

  private healAll(): void {
    for (const f of this.active) this.endFault(f);
    this.active = [];
    this.log('all faults healed');
  }

  private endFault(f: Fault): void {
    const pg = this.pg.get(f.member)!;
    if (f.kind === 'killNode') {
      const agent = this.agents.get(f.member)!;
      agent.alive = true;
      agent.nextCycle = this.trueTime;
      this.log(`${f.member}: node back (agent starting)`);
    }
    if (f.kind === 'hangPostgres' && pg.run === 'hung') {
      pg.run = 'running';
      if (pg.stopPending) {
        pg.stopPending = false;
        pg.crash();
        this.log(`${f.member}: PostgreSQL resumed and handled the pending stop signal`);
      }
    }
  }

  private startFault(fault: Fault): void {
    if (fault.onSyncChange !== undefined) {
      this.armed.push({ fault, revision: this.store.get(this.watchedKey())?.revision, changedAt: undefined });
      return;
    }
    const f = fault.role ? { ...fault, member: this.resolveRole(fault), role: undefined } : fault;
    const pg = this.pg.get(f.member)!;
    const agent = this.agents.get(f.member)!;
    this.log(`FAULT ${f.kind} ${f.member}${f.kind === 'clockStep' ? ` by ${f.ms} ms` : f.kind === 'switchover' ? ` to ${f.to ?? 'any'}` : ` for ${f.ms} ms`}`);
    switch (f.kind) {
      case 'crashPostgres':
        if (pg.run !== 'stopped') pg.crash();
        return;
      case 'hangPostgres':
        if (pg.run === 'running') {
          pg.run = 'hung';
          pg.lose();
          this.active.push(f);
        }
        return;
      case 'setQuorumMode':
        // Every agent reads the new mode from its next cycle on (the cluster settings are shared).
        (this.schedule as { settings: ClusterSettings }).settings = { ...this.schedule.settings, synchronousMode: 'quorum' };
        return;
      case 'killNode': {
        // The whole node: PostgreSQL crashes and its agent is gone for the fault's duration (its lease expires).
        if (pg.run !== 'stopped') pg.crash();
        this.agents.set(f.member, { ...this.freshAgent(f.member, f.ms), alive: false });
        this.active.push(f);
        return;
      }
      case 'restartAgent': {
        // The old lease is left to expire; PostgreSQL keeps running.
        const fresh = this.freshAgent(f.member, f.ms);
        this.agents.set(f.member, fresh);
        return;
      }
      case 'clockStep':
        agent.clockOffset += f.ms;
        return;
      case 'switchover': {
        const leader = this.store.get(KEYS.leader)?.value as LeaderRecord | undefined;
        if (!leader || this.store.get(KEYS.failover)) return;
        const request: FailoverRequest = {
          kind: 'switchover',
          from: leader.member,
          to: f.to === leader.member ? null : (f.to ?? null),
          at: null,
          force: false,
          requestedAt: new Date(this.wallClock(f.member)).toISOString(),
          shutdownLsn: null,
        };
        this.store.create(KEYS.failover, request);
        return;
      }
      case 'operatorRestart':
        agent.operatorRequest = { kind: 'restart' };
        return;
      case 'operatorReinit':
        agent.operatorRequest = { kind: 'reinit' };
        return;
      default:
        this.active.push(f);
    }
  }

  private wakeWatchers(): void {
    if (this.store.changed.length === 0) return;
    const wakes = this.store.changed.some((k) => k === KEYS.leader || k === KEYS.init || k === KEYS.failover);
    this.store.changed = [];
    if (!wakes) return;
    for (const agent of this.agents.values()) {
      if (agent.alive && this.storeRequest(agent.name) && this.storeResponse(agent.name)) agent.nextCycle = Math.min(agent.nextCycle, this.trueTime);
    }
  }

  // ---------------------------------------------------------------- one agent cycle

  private cycle(agent: Agent): void {
    const name = agent.name;
    const settings = this.schedule.settings;
    let leaseError: string | undefined;
    // ensureLease: the renewal time is taken before the request is sent.
    const sentAt = this.monotonic(name);
    if (!this.storeRequest(name)) leaseError = 'store unreachable';
    else if (agent.lease !== undefined && this.store.keepAlive(agent.lease, this.trueTime, settings.ttlMs)) {
      if (this.storeResponse(name)) agent.leaseRenewedAt = sentAt;
      else leaseError = 'no answer from the store';
    } else {
      const lease = this.store.grant(this.trueTime, settings.ttlMs);
      if (this.storeResponse(name)) {
        agent.lease = lease;
        agent.leaseRenewedAt = sentAt;
      } else leaseError = 'no answer from the store';
    }
    const observation = this.observe(agent, leaseError);
    if (observation.store.reachable && observation.store.leader) agent.sawLeaders.add(observation.store.leader.member);
    const decision = this.decideSafely(agent, observation);
    if (!decision) return;
    this.record(agent, observation, decision);
    agent.memory = decision.memory;
    agent.outcomes = [];
    // A slow store delays what the decision does, except a stop: pg_ctl acts locally at once.
    const delayed = this.faultOn('storeDelay', name) && decision.actions[0]?.type !== 'stopPostgres' ? this.rng.int(1, 15) * TICK_MS : 0;
    agent.inFlight = { at: this.trueTime + delayed, decision, observation };
    if (delayed === 0) this.land(agent);
  }

  /** The agent's fence watchdog (src/agent/agent.ts armFence): a timer that does not wait for a slow cycle. */
  private watchdog(agent: Agent): void {
    const settings = this.schedule.settings;
    if (!agent.runsAsPrimary || agent.leaseRenewedAt === undefined || settings.paused) return;
    const held = this.failsafeHeldUntil(agent) ?? -Infinity;
    if (this.monotonic(agent.name) < Math.max(held, agent.leaseRenewedAt + settings.ttlMs - settings.fenceMarginMs)) return;
    agent.runsAsPrimary = false;
    const pg = this.pg.get(agent.name)!;
    if (pg.run === 'stopped' || pg.inRecovery) return;
    this.log(`${agent.name}: fence watchdog: lease not renewed in time, stopping PostgreSQL`);
    agent.outcomes.push(this.perform(agent, { type: 'stopPostgres', mode: 'fast' }));
  }

  private failsafeHeldUntil(agent: Agent): number | undefined {
    if (!this.schedule.settings.failsafe || agent.failsafe.ended) return undefined;
    return holdDeadline(this.schedule.settings, agent.failsafe.membership, agent.failsafe.confirmedAt);
  }

  /**
   * As src/agent/agent.ts failsafeLoop, every loopWaitMs: a primary whose lease
   * renewal is overdue asks every member of its last known membership over the
   * API (a partition cuts that too); one missing confirmation ends failsafe.
   */
  private failsafeRound(agent: Agent): void {
    const s = this.schedule.settings;
    const f = agent.failsafe;
    const now = this.monotonic(agent.name);
    if (this.step % Math.max(1, Math.round(s.loopWaitMs / TICK_MS)) !== 0) return;
    const overdue = agent.leaseRenewedAt !== undefined && now - agent.leaseRenewedAt > 2 * s.loopWaitMs;
    if (!s.failsafe || !agent.runsAsPrimary || s.paused || !overdue) {
      f.ended = false;
      f.confirmedAt.clear();
      return;
    }
    if (f.ended) return;
    const answers = f.membership.map((m) => {
      const peer = this.agents.get(m)!;
      if (!peer.alive || !this.linked(agent.name, m)) return false;
      const given = peer.failsafe.given;
      const promised = given && this.monotonic(m) - given.at < s.ttlMs ? given.leader : undefined;
      const verdict = mayConfirm(s, { name: m, role: peer.status?.role, state: peer.state }, peer.failsafe.lastLeader, agent.name, promised);
      if (!verdict.ok) return false;
      peer.failsafe.given = { leader: agent.name, at: this.monotonic(m) };
      return true;
    });
    if (f.membership.length === 0 || answers.includes(false)) {
      f.ended = true;
      f.confirmedAt.clear();
      this.log(`${agent.name}: failsafe ended: not every member confirmed`);
      return;
    }
    for (const m of f.membership) f.confirmedAt.set(m, now);
    this.failsafeRounds++;
  }

  /** Failsafe rounds in which every member confirmed a primary without the store. */
  failsafeRounds = 0;

  private decideSafely(agent: Agent, observation: Observation): Decision | undefined {
    try {
      return decide(observation);
    } catch (error) {
      this.violation = { kind: 'crash', step: this.step, message: `decide() threw on ${agent.name}: ${(error as Error).stack}` };
      return undefined;
    }
  }

  private land(agent: Agent): void {
    const { decision, observation } = agent.inFlight!;
    agent.inFlight = undefined;
    for (const action of decision.actions) {
      const before = this.pg.get(agent.name)!.ssn;
      const outcome = this.perform(agent, action);
      agent.outcomes.push(outcome);
      if (outcome.result !== 'ok') {
        if (this.traceAll) this.log(`${agent.name}: ${action.type} ${outcome.result}: ${outcome.error}`);
        break;
      }
      if (action.type === 'writeSyncRecord') this.fallbackGivesUp(agent.name, action, decision, before);
    }
    const after = decision.actions.length > 0 ? this.observe(agent, observation.store.reachable ? undefined : 'unreachable') : observation;
    const server = after.server;
    agent.runsAsPrimary = (server.kind === 'running' ? !server.inspection.inRecovery : server.kind === 'unreachable' && agent.runsAsPrimary) && !after.settings.paused;
    agent.status = memberStatus(this.configOf(agent.name), after, decision, this.schedule.settings.paused);
    if (after.store.reachable && agent.lease !== undefined && this.storeRequest(agent.name)) this.store.put(KEYS.member(agent.name), agent.status, agent.lease);
    const wait = Math.min(this.schedule.settings.loopWaitMs, decision.retryInMs ?? Infinity);
    agent.nextCycle = this.trueTime + Math.max(TICK_MS, Math.ceil(wait / TICK_MS) * TICK_MS);
  }

  private record(agent: Agent, observation: Observation, decision: Decision): void {
    const from = agent.state;
    if (decision.defect) {
      if (process.env.SIM_LIST_DEFECTS) {
        this.edges.add(`DEFECT ${decision.defect.from} -> ${decision.state === from ? '' : ''}${decision.reason.split(' (wanted')[0]}`);
        return;
      }
      this.violation = { kind: 'defect', step: this.step, message: `${agent.name}: ${decision.reason}` };
      return;
    }
    const types = [...new Set(decision.actions.map((a) => a.type))].sort().join(',');
    if (from !== decision.state || types) this.edges.add(`${from} -> ${decision.state}${types ? ` [${types}]` : ''}`);
    if (from !== decision.state || this.traceAll) this.log(`${agent.name}: ${from} -> ${decision.state}${types ? ` [${types}]` : ''}: ${decision.reason}`);
    if (decision.state === 'promoting' && from !== 'promoting') this.failovers++;
    if (from !== decision.state) {
      agent.state = decision.state;
      agent.since = observation.monotonic;
    }
  }

  private configOf(name: string): MemberConfig {
    return {
      name,
      tags: { nofailover: false, priority: 100 },
      postgres: { dataDir: `/sim/${name}`, connectAddress: `${name}:5432` },
      api: { url: `http://${name}:8008` },
    } as unknown as MemberConfig;
  }

  // ---------------------------------------------------------------- observation

  private storeView(name: string): StoreView {
    const value = <T>(key: string): T | undefined => this.store.get(key)?.value as T | undefined;
    const leader = this.store.get(KEYS.leader);
    const members: MemberStatus[] = [];
    for (const m of this.schedule.members) {
      const status = value<MemberStatus>(KEYS.member(m));
      if (status) members.push(status);
    }
    void name;
    return {
      reachable: true,
      init: value<InitRecord>(KEYS.init),
      leader: leader ? { ...(leader.value as LeaderRecord), revision: leader.revision } : undefined,
      members,
      slotRegistry: value<SlotRegistry>(KEYS.slots) ?? {},
      sync: value<SyncRecord>(KEYS.sync),
      quorum: this.store.get(KEYS.quorum) ? { ...(this.store.get(KEYS.quorum)!.value as QuorumRecord), revision: this.store.get(KEYS.quorum)!.revision } : undefined,
      history: value<HistoryEntry[]>(KEYS.history) ?? [],
      optime: value<Optime>(KEYS.optime),
      failover: value<FailoverRequest>(KEYS.failover),
      revisions: {
        leader: leader?.revision,
        sync: this.store.get(KEYS.sync)?.revision,
        quorum: this.store.get(KEYS.quorum)?.revision,
        history: this.store.get(KEYS.history)?.revision,
        optime: this.store.get(KEYS.optime)?.revision,
        failover: this.store.get(KEYS.failover)?.revision,
        slots: this.store.get(KEYS.slots)?.revision,
        initialize: this.store.get(KEYS.init)?.revision,
      },
      unreadable: [],
    };
  }

  /** A compare-and-swap at the observed revision, or an atomic create when the record was absent. */
  private writeShared(name: string, key: string, value: unknown, revision: number | undefined): void {
    const written = this.storeCall(name, () => (revision === undefined ? this.store.create(key, value) : this.store.cas(key, value, revision)));
    if (written === undefined) throw new LostCas(key, `${key} changed since it was read`);
  }

  private observe(agent: Agent, leaseError: string | undefined): Observation {
    const name = agent.name;
    const pg = this.pg.get(name)!;
    const reachable = leaseError === undefined && this.storeRequest(name) && this.storeResponse(name);
    const store: StoreView = reachable ? this.storeView(name) : { reachable: false, error: leaseError ?? 'store unreachable' };
    const server: Observation['server'] =
      pg.run === 'stopped'
        ? { kind: 'stopped' }
        : pg.run === 'hung'
          ? { kind: 'unreachable', postmasterPid: 100, error: 'timeout' }
          : { kind: 'running', postmasterPid: 100, inspection: inspect(pg, name, this.pg) };
    if (store.reachable) {
      const read = store.members.map((m) => ({ name: m.name })).filter((m) => m.name !== name);
      const f = agent.failsafe;
      agent.failsafe.membership = membershipAfterRead(f.membership.map((m) => ({ name: m })), read, f.confirmedAt.size > 0 && !f.ended).map((m) => m.name);
      agent.failsafe.lastLeader = store.leader?.member;
      agent.failsafe.given = givenAfterRead(agent.failsafe.given, store.leader?.member);
    }
    const given = agent.failsafe.given;
    const failsafe: FailsafeView = {
      heldUntil: this.failsafeHeldUntil(agent),
      members: agent.failsafe.membership,
      confirmed: given && this.monotonic(name) - given.at < this.schedule.settings.ttlMs ? given : undefined,
    };
    const electionDue = store.reachable && store.leader === undefined && server.kind === 'running' && server.inspection.inRecovery;
    const peers: PeerView[] = electionDue
      ? this.schedule.members
          .filter((m) => m !== name && store.members.some((s) => s.name === m))
          .map((m) => {
            const peer = this.agents.get(m)!;
            return this.linked(name, m) && peer.alive && peer.status ? { name: m, status: peer.status } : { name: m, status: undefined, error: 'unreachable' };
          })
      : [];
    const tl = pg.tl?.number ?? 1;
    return {
      now: this.wallClock(name),
      monotonic: this.monotonic(name),
      member: { name, connectAddress: `${name}:5432`, nofailover: false, priority: 100 },
      settings: this.schedule.settings,
      dataDir: pg.data,
      systemIdentifier: pg.data === 'initialized' ? SYSTEM_ID : undefined,
      control:
        pg.data === 'initialized' && pg.run === 'stopped'
          ? {
              systemIdentifier: SYSTEM_ID,
              clusterState: pg.inRecovery ? 'shut down in recovery' : pg.cleanShutdown ? 'shut down' : 'in production',
              timeline: tl,
              checkpointLsn: lsnText(Math.max(0, pg.lsn - 1)),
              minRecoveryLsn: pg.standbySignal ? lsnText(pg.lsn) : null,
            }
          : undefined,
      standbyConfigured: pg.data === 'initialized' && pg.standbySignal,
      upstreamConfigured: pg.data === 'initialized' && pg.upstream !== null,
      server,
      store,
      peers,
      failsafe,
      haveCredentials: true,
      leaseRenewedAt: agent.leaseRenewedAt,
      operatorRequest: agent.operatorRequest,
      memory: agent.memory,
      outcomes: agent.outcomes,
      previous: { state: agent.state, since: agent.since },
    };
  }

  // ---------------------------------------------------------------- actions, on the model

  private perform(agent: Agent, action: Action): ActionOutcome {
    try {
      this.apply(agent, action);
      return { type: action.type, result: 'ok' };
    } catch (error) {
      if (error instanceof LostCas) return { type: action.type, result: 'lost_cas', key: error.key, error: error.message };
      const retryable = error instanceof Failure ? error.retryable : false;
      return { type: action.type, result: 'failed', code: failureCode(action.type), error: (error as Error).message, retryable };
    }
  }

  /** A store call: its effect happens if the request arrives; the caller learns of it only if the answer comes back. */
  private storeCall<T>(name: string, call: () => T): T {
    if (!this.storeRequest(name)) throw new Failure('store unreachable');
    const result = call();
    if (!this.storeResponse(name)) throw new Failure('no answer from the store');
    return result;
  }

  private requireRunning(pg: SimPostgres): void {
    if (pg.run !== 'running') throw new Failure(`PostgreSQL is ${pg.run}`);
  }

  private newTimeline(pg: SimPostgres): Timeline {
    let highest = 0;
    for (let t = pg.tl; t; t = t.parent) highest = Math.max(highest, t.number);
    return { uid: this.nextTimeline++, number: highest + 1, parent: pg.tl, forkAt: pg.lsn };
  }

  private acquireLeader(agent: Agent): void {
    if (agent.lease === undefined) throw new Failure('no session lease');
    const record: LeaderRecord = { member: agent.name, ttlMs: this.schedule.settings.ttlMs, acquiredAt: new Date(this.wallClock(agent.name)).toISOString() };
    const revision = this.storeCall(agent.name, () => this.store.create(KEYS.leader, record, agent.lease));
    if (revision === undefined) throw new LostCas(KEYS.leader, 'another member took the leader lease first');
  }

  private releaseLeader(agent: Agent): void {
    this.storeCall(agent.name, () => {
      const current = this.store.get(KEYS.leader);
      if (current && (current.value as LeaderRecord).member === agent.name) this.store.delete(KEYS.leader, current.revision);
    });
  }

  private updateHistory(agent: Agent, change: (h: HistoryEntry[]) => HistoryEntry[] | undefined): void {
    this.storeCall(agent.name, () => {
      const current = this.store.get(KEYS.history);
      const changed = change((current?.value as HistoryEntry[] | undefined) ?? []);
      if (!changed) return;
      if (current) this.store.cas(KEYS.history, changed, current.revision);
      else this.store.create(KEYS.history, changed);
    });
  }

  private stop(name: string, pg: SimPostgres): void {
    if (pg.run === 'hung') {
      // The signal waits for the process to resume; pg_ctl gives up meanwhile.
      pg.stopPending = true;
      throw new Failure('pg_ctl stop timed out: PostgreSQL does not answer');
    }
    if (pg.run === 'stopped') return;
    // A clean shutdown sends the shutdown checkpoint to every connected standby first.
    const checkpoint = { id: -this.nextRecord++ };
    if (!pg.inRecovery) {
      pg.wal.push(checkpoint);
      for (const [, other] of this.pg) if (other.streamingFrom === name && other.run === 'running') other.wal = pg.wal.slice();
    }
    pg.run = 'stopped';
    pg.cleanShutdown = true;
    pg.lose();
    void name;
  }

  private start(pg: SimPostgres): void {
    if (pg.data !== 'initialized') throw new Failure('no data directory', false);
    if (pg.run === 'hung') throw new Failure('PostgreSQL does not answer');
    pg.fenced = false;
    if (pg.run === 'running') return;
    pg.run = 'running';
    pg.inRecovery = pg.standbySignal;
    pg.syncReleased = 0;
  }

  /** ALTER SYSTEM read-only and an impossible synchronous standby, over SQL, when it answers. */
  private fence(name: string, member: string): void {
    const former = this.pg.get(member);
    if (former && this.linked(name, member) && former.run === 'running' && !former.inRecovery) {
      former.fenced = true;
      former.ssn = 'relevo_fenced';
      former.pending = [];
      this.log(`${name} fenced former primary ${member} over SQL`);
    }
  }

  private apply(agent: Agent, action: Action): void {
    const name = agent.name;
    const pg = this.pg.get(name)!;
    const settings = this.schedule.settings;
    switch (action.type) {
      case 'claimInitialize': {
        const record: InitRecord = { member: name, startedAt: 'sim', systemIdentifier: action.systemIdentifier };
        this.storeCall(name, () => this.store.create(KEYS.init, record));
        return;
      }
      case 'completeInitialize': {
        const current = this.storeCall(name, () => this.store.get(KEYS.init));
        if (!current) throw new Failure('the initialise key vanished');
        const ok = this.storeCall(name, () => this.store.cas(KEYS.init, { ...(current.value as InitRecord), systemIdentifier: action.systemIdentifier }, current.revision));
        if (ok === undefined) throw new LostCas(KEYS.init, 'initialise key changed concurrently');
        return;
      }
      case 'bootstrap': {
        if (pg.data !== 'empty') throw new Failure('data directory not empty', false);
        pg.data = 'initialized';
        pg.tl = { uid: this.nextTimeline++, number: 1, parent: undefined, forkAt: 0 };
        pg.wal = [{ id: -this.nextRecord++ }];
        pg.standbySignal = false;
        pg.upstream = null;
        pg.ssn = '';
        pg.run = 'running';
        pg.inRecovery = false;
        const current = this.storeCall(name, () => this.store.get(KEYS.init));
        if (!current) throw new Failure('the initialise key vanished during bootstrap');
        this.storeCall(name, () => this.store.cas(KEYS.init, { ...(current.value as InitRecord), systemIdentifier: SYSTEM_ID }, current.revision));
        this.acquireLeader(agent);
        return;
      }
      case 'clone': {
        const source = this.pg.get(action.upstream.member);
        if (!source || !this.linked(name, action.upstream.member) || !source.answers()) throw new Failure(`cannot reach ${action.upstream.member}`);
        if (!source.slots.has(action.upstream.slot)) throw new Failure(`slot ${action.upstream.slot} does not exist`);
        if (pg.data !== 'empty') throw new Failure('data directory not empty', false);
        pg.data = 'initialized';
        pg.wal = source.wal.slice();
        pg.tl = source.tl;
        pg.standbySignal = true;
        pg.upstream = action.upstream.member;
        pg.ssn = '';
        pg.run = 'stopped';
        pg.cleanShutdown = true;
        pg.slots.clear();
        this.reconciled(name);
        return;
      }
      case 'startPostgres':
        if (action.as === 'primary') {
          pg.standbySignal = false;
          pg.upstream = null;
          pg.ssn = action.synchronousStandbyNames;
        } else {
          pg.standbySignal = true;
          pg.upstream = action.upstream?.member ?? null;
          pg.ssn = '';
        }
        this.start(pg);
        return;
      case 'stopPostgres':
        this.stop(name, pg);
        return;
      case 'restartPostgres':
        this.stop(name, pg);
        this.start(pg);
        return;
      case 'acquireLeader':
        this.acquireLeader(agent);
        return;
      case 'releaseLeader':
        this.releaseLeader(agent);
        return;
      case 'configure':
        if (action.as === 'replica') pg.upstream = action.upstream.member;
        else pg.ssn = action.synchronousStandbyNames;
        return;
      case 'detachUpstream':
        pg.upstream = null;
        pg.streamingFrom = null;
        return;
      case 'syncSlots':
        this.requireRunning(pg);
        for (const slot of action.create) pg.slots.add(slot);
        for (const { slot } of action.drop) pg.slots.delete(slot);
        if (action.registry) this.writeShared(name, KEYS.slots, action.registry, action.registryRevision);
        return;
      case 'promote': {
        if (action.acquire) this.acquireLeader(agent);
        if (action.fence) this.fence(name, action.fence.member);
        try {
          this.updateHistory(agent, (h) =>
            h.some((e) => e.timeline === action.timeline && e.to === name)
              ? undefined
              : [...h, { timeline: action.timeline, from: action.from, to: name, reason: action.reason, lsn: action.forkLsn, at: 'sim' }],
          );
          this.storeCall(name, () => this.store.put(KEYS.sync, { leader: name, members: [], ...(action.syncPrevious?.length ? { previous: action.syncPrevious } : {}), updatedAt: 'sim' }));
          // Quorum mode: the record naming who may hold the first commits, before pg_promote() (src/agent/effects.ts).
          const quorum = action.quorum;
          if (quorum) this.storeCall(name, () => this.store.put(KEYS.quorum, { leader: name, members: quorum.members, quorum: quorum.quorum }));
        } catch (error) {
          try {
            this.releaseLeader(agent);
          } catch {
            // The lease expires on its own.
          }
          throw error;
        }
        this.requireRunning(pg);
        pg.ssn = action.synchronousStandbyNames;
        if (pg.inRecovery) {
          this.checkPromotion(name, pg);
          if (this.violation) return;
          pg.tl = this.newTimeline(pg);
          pg.wal.push({ id: -this.nextRecord++ });
          pg.inRecovery = false;
          pg.standbySignal = false;
          pg.upstream = null;
          pg.streamingFrom = null;
          pg.syncReleased = 0;
        }
        for (const slot of action.slots) pg.slots.add(slot);
        const timeline = pg.tl!;
        this.updateHistory(agent, (h) => {
          const index = h.map((e) => e.timeline === action.timeline && e.to === name).lastIndexOf(true);
          const entry = h[index];
          const lsn = lsnText(timeline.forkAt);
          if (!entry || (entry.timeline === timeline.number && entry.lsn === lsn)) return undefined;
          return h.map((e, i) => (i === index ? { ...e, timeline: timeline.number, lsn } : e));
        });
        return;
      }
      case 'recordSwitchPoint': {
        const timeline = pg.tl!;
        this.updateHistory(agent, (h) => {
          const index = h.map((e) => e.timeline === action.predictedTimeline && e.to === name).lastIndexOf(true);
          return index < 0 ? undefined : h.map((e, i) => (i === index ? { ...e, timeline: timeline.number, lsn: lsnText(timeline.forkAt) } : e));
        });
        return;
      }
      case 'writeQuorumRecord':
        // Written as effects.ts does, by compare-and-swap (with updatedAt left out: nothing here reads it).
        this.writeShared(name, 'quorum', { leader: name, members: action.members, quorum: action.quorum }, action.revision ?? undefined);
        return;
      case 'writeSyncRecord':
        this.writeShared(name, KEYS.sync, { leader: name, members: action.members, ...(action.previous?.length ? { previous: action.previous } : {}), updatedAt: 'sim' }, action.revision);
        return;
      case 'writeOptime':
        this.writeShared(name, KEYS.optime, { member: name, address: `${name}:5432`, lsn: action.lsn, timeline: action.timeline, at: new Date(this.wallClock(name)).toISOString() }, action.revision);
        return;
      case 'fenceFormerPrimary':
        this.fence(name, action.member);
        return;
      case 'rewind': {
        const source = this.pg.get(action.upstream.member);
        if (!source || !this.linked(name, action.upstream.member) || !source.answers()) throw new Failure(`cannot reach ${action.upstream.member}`);
        if (pg.run !== 'stopped') throw new Failure('PostgreSQL runs', false);
        if (!canFollow(pg, source)) {
          // pg_rewind cannot always reconcile (e.g. WAL it needs was recycled).
          if (this.rng.chance(0.05)) throw new Failure('pg_rewind: could not find previous WAL record', false);
          pg.wal = source.wal.slice();
          pg.tl = source.tl;
          this.log(`${name} rewound from ${action.upstream.member}`);
          this.reconciled(name);
        }
        pg.standbySignal = true;
        pg.upstream = action.upstream.member;
        pg.ssn = '';
        this.start(pg);
        return;
      }
      case 'moveDataAside':
        if (pg.run !== 'stopped') throw new Failure('PostgreSQL runs', false);
        pg.data = 'empty';
        pg.wal = [];
        pg.tl = undefined;
        pg.slots.clear();
        pg.standbySignal = false;
        pg.upstream = null;
        this.log(`${name} moved its data aside: ${action.reason}`);
        return;
      case 'handOver': {
        // pg_controldata's latest checkpoint location: where the shutdown checkpoint record starts.
        const shutdownLsn = lsnText(Math.max(0, pg.lsn - 1));
        this.storeCall(name, () => {
          const current = this.store.get(KEYS.failover);
          if (current) this.store.cas(KEYS.failover, { ...(current.value as FailoverRequest), shutdownLsn }, current.revision);
        });
        this.releaseLeader(agent);
        return;
      }
      case 'clearFailoverRequest':
        if (!this.storeCall(name, () => this.store.delete(KEYS.failover, action.revision))) throw new LostCas(KEYS.failover, 'the request changed since it was read');
        return;
      case 'finishOperatorRequest':
        agent.operatorRequest = undefined;
        return;
      case 'recordDemotion':
        // The simulation runs no standby cluster (docs/sites.md): decide() never asks for this here.
        throw new Error('recordDemotion is not modelled: the simulation has no standby cluster');
      default: {
        const unhandled: never = action;
        throw new Error(`no model for action ${(unhandled as Action).type}`);
      }
    }
    void settings;
  }

  // ---------------------------------------------------------------- PostgreSQL's own work each step

  private replicate(): void {
    for (const [name, pg] of this.pg) {
      if (pg.run !== 'running' || !pg.inRecovery) {
        pg.streamingFrom = null;
        continue;
      }
      const source = pg.upstream ? this.pg.get(pg.upstream) : undefined;
      // A walreceiver needs its slot on the source, both directions of the link, and WAL it can follow.
      if (!source || source.run !== 'running' || !this.linked(name, pg.upstream!) || !source.slots.has(name) || !canFollow(pg, source)) {
        pg.streamingFrom = null;
        continue;
      }
      pg.streamingFrom = pg.upstream;
      this.reconciled(name);
      // A slow link or disk: at most one record every other step or so, slower than the clients write.
      if (this.faultOn('slowReplica', name)) {
        if (pg.wal.length < source.wal.length && this.rng.chance(0.3)) pg.wal = source.wal.slice(0, pg.wal.length + 1);
      } else if (pg.wal.length < source.wal.length) pg.wal = source.wal.slice(0, Math.min(source.wal.length, pg.wal.length + this.rng.int(1, 40)));
      pg.tl = source.tl;
    }
  }

  private clients(): void {
    for (const [name, pg] of this.pg) {
      if (pg.run !== 'running' || pg.inRecovery) continue;
      pg.openTransactions = this.rng.chance(0.1) ? 1 : 0;
      if (pg.acceptsWrites() && this.rng.chance(this.schedule.writeChance ?? 0.6)) {
        const id = this.nextRecord++;
        this.checkFormerPrimaryWrite(name, pg);
        pg.wal.push({ id });
        pg.pending.push({ id, lsn: pg.lsn, synchronous: pg.ssn !== '' });
      }
      // Synchronous acknowledgement: FIRST k: the first k connected names, in order, must have flushed;
      // ANY k: any k connected names (the k-th most advanced of them bounds what is released).
      const sync = parseStandbyNames(pg.ssn);
      if (sync) {
        const streaming = sync.names.filter((n) => this.pg.get(n)?.streamingFrom === name);
        const connected = sync.any ? streaming.map((n) => this.pg.get(n)!.lsn).sort((x, y) => y - x).slice(0, sync.count) : streaming.slice(0, sync.count).map((n) => this.pg.get(n)!.lsn);
        if (connected.length === sync.count) {
          const flushed = Math.min(...connected);
          pg.syncReleased = Math.max(pg.syncReleased, flushed);
        }
      }
      const done = pg.pending.filter((p) => !p.synchronous || p.lsn <= pg.syncReleased);
      if (done.length === 0) continue;
      pg.pending = pg.pending.filter((p) => !done.includes(p));
      for (const p of done) this.acknowledge({ id: p.id, member: name, lsn: p.lsn, synchronous: p.synchronous });
      if (this.violation) return;
    }
  }

  // ---------------------------------------------------------------- invariants

  /**
   * A former primary that was not reconciled taking a write into its WAL. Never acknowledged (that is checked in
   * acknowledge()), and undone by pg_rewind; counted, not a violation: see docs/reliability.md.
   */
  private checkFormerPrimaryWrite(name: string, pg: SimPostgres): void {
    const last = this.lastAck;
    if (!last || last.member === name || pg.wal[last.lsn - 1]?.id === last.id) return;
    if (this.unreconciled(name)) this.unacknowledgedFormerWrites++;
  }

  /** Sequence number (acknowledgements so far) when each member last followed another one's WAL: streamed, or was rewound or cloned. */
  private readonly reconciledAt = new Map<string, number>();
  private reconciled(name: string): void {
    this.reconciledAt.set(name, this.acknowledged);
  }
  /** `name` acknowledged before, another member acknowledged since, and `name` has not followed anyone since its last acknowledgement. */
  private unreconciled(name: string): boolean {
    const mine = this.everAcknowledged.get(name);
    return mine !== undefined && this.ackedSince(name) && !((this.reconciledAt.get(name) ?? -1) > mine);
  }

  unacknowledgedFormerWrites = 0;
  /**
   * Asynchronous mode only: a former primary whose agent was down (dead, restarting, or stuck before carrying
   * out anything) since the new primary began acknowledging keeps acknowledging until something stops it, when
   * the new primary cannot reach it to fence it. No decision can close this window; only a watchdog outside the
   * agent (or synchronous mode) can.
   */
  agentDownWindows = 0;
  private agentDownOverlap: string | undefined;
  private termStart = 0;

  /** `name`'s agent process died (a restart fault) and the one running now has not yet seen `leader` lead. */
  private agentCouldNotAct(name: string, leader: string): boolean {
    if (this.schedule.settings.synchronousMode !== 'off') return false;
    const agent = this.agents.get(name)!;
    return agent.restarted && !agent.sawLeaders.has(leader);
  }

  private readonly everAcknowledged = new Map<string, number>();
  /** Whether another member acknowledged after `name`'s last acknowledgement. */
  private ackedSince(name: string): boolean {
    const mine = this.everAcknowledged.get(name) ?? -1;
    for (const [other, at] of this.everAcknowledged) if (other !== name && at > mine) return true;
    return false;
  }

  private acknowledge(ack: Ack): void {
    const pg = this.pg.get(ack.member)!;
    const last = this.lastAck;
    const overlap = last && last.member !== ack.member && (this.lastAckStep === this.step || this.unreconciled(ack.member));
    if (overlap && this.agentCouldNotAct(ack.member, last.member)) {
      // Known limitation, counted: see docs/reliability.md.
      if (this.agentDownOverlap !== ack.member) this.agentDownWindows++;
      this.agentDownOverlap = ack.member;
      // Not a term of its own: the members that follow the new primary are not judged against it.
      this.acknowledged++;
      return;
    } else if (last && last.member !== ack.member && this.lastAckStep === this.step && this.agentCouldNotAct(last.member, ack.member)) {
      // The same window seen from the other side: the former primary acknowledged first in this step.
      if (this.agentDownOverlap !== last.member) this.agentDownWindows++;
      this.agentDownOverlap = last.member;
    } else if (last && last.member !== ack.member && this.lastAckStep === this.step) {
      this.violation = { kind: 'two-acknowledging', step: this.step, message: `${last.member} and ${ack.member} both acknowledged commits in the same step` };
      return;
    }
    // Invariant 1: a member that acknowledged before another one did must hold that one's commits to acknowledge again.
    if (last && last.member !== ack.member && this.unreconciled(ack.member)) {
      this.violation = {
        kind: 'former-primary-acknowledged',
        step: this.step,
        message: `former primary ${ack.member} acknowledged commit ${ack.id} after ${last.member} acknowledged commit ${last.id}, without having followed anyone since its own last acknowledgement: it was not reconciled (two members acknowledging)`,
      };
      return;
    }
    // Invariant 2: every commit acknowledged through a synchronous standby is held by whoever acknowledges later.
    const sync = this.lastSyncAck;
    if (this.schedule.settings.synchronousMode !== 'off' && sync && sync.member !== ack.member && pg.wal[sync.lsn - 1]?.id !== sync.id) {
      this.violation = {
        kind: 'lost-commit',
        step: this.step,
        message: `${ack.member} acknowledged commit ${ack.id} but lacks commit ${sync.id}, acknowledged synchronously by ${sync.member}: an acknowledged commit was lost`,
      };
      return;
    }
    if (this.schedule.settings.synchronousMode !== 'off') this.lastSyncAck = ack.synchronous && this.guaranteed(ack.member) ? ack : undefined;
    if (last?.member !== ack.member) this.termStart = this.trueTime;
    this.lastAck = ack;
    if (this.lastAckTime !== undefined) this.ackGaps.push({ at: this.lastAckTime, ms: this.trueTime - this.lastAckTime, from: last!.member, to: ack.member });
    this.lastAckTime = this.trueTime;
    this.lastAckStep = this.step;
    this.everAcknowledged.set(ack.member, this.acknowledged);
    this.acknowledged++;
  }

  /**
   * Whether `primary`'s acknowledgements carry the synchronous guarantee: always in strict mode (no record,
   * no promotion); otherwise while the sync record names it with at least one member, or with the members
   * that may hold its commits while the set changes (`previous`). After a fallback to
   * asynchronous replication the record is emptied first, and until it names a verified standby again the
   * commits are not protected by design (docs/configuration.md, synchronousFallbackMs).
   */
  private guaranteed(primary: string): boolean {
    if (this.schedule.settings.synchronousStrict) return true;
    if (this.schedule.settings.synchronousMode === 'quorum') {
      // The quorum record vouches for the commit: at least q members of S flushed it (src/agent/quorum.ts).
      const quorum = this.store.get(KEYS.quorum)?.value as { leader: string; quorum: number } | undefined;
      return quorum?.leader === primary && quorum.quorum > 0;
    }
    const record = this.store.get(KEYS.sync)?.value as SyncRecord | undefined;
    // While the set changes, `previous` vouches for the commit: the most advanced of them holds it.
    return record?.leader === primary && (record.members.length > 0 || (record.previous?.length ?? 0) > 0);
  }

  /**
   * The fallback to asynchronous replication (synchronousFallbackMs, docs/configuration.md) gives up the
   * guarantee of the commits acknowledged so far, by design: the record is emptied without naming anyone
   * new (synchronous_standby_names stays as it is, or becomes ''). Emptying it while a replacement is
   * named is not a fallback, and the obligation stays (the window of docs/reliability.md).
   */
  private fallbackGivesUp(name: string, action: Extract<Action, { type: 'writeSyncRecord' }>, decision: Decision, inEffect: string): void {
    if (action.members.length > 0 || (action.previous?.length ?? 0) > 0 || this.lastSyncAck?.member !== name) return;
    const configure = decision.actions.find((a) => a.type === 'configure');
    const named = configure?.type === 'configure' && configure.as === 'primary' ? configure.synchronousStandbyNames : inEffect;
    if (named !== '' && named !== inEffect) return;
    this.lastSyncAck = undefined;
    this.log(`${name}: sync record emptied without a replacement (fallback to asynchronous replication): earlier commits lose the synchronous guarantee, by design`);
  }

  /** Invariant 2 at the promotion itself: the new primary holds the last commit acknowledged with the synchronous guarantee. */
  private checkPromotion(name: string, pg: SimPostgres): void {
    const sync = this.lastSyncAck;
    if (!sync || sync.member === name || pg.wal[sync.lsn - 1]?.id === sync.id) return;
    this.violation = {
      kind: 'lost-commit',
      step: this.step,
      message: `unsafe promotion: ${name} (received ${pg.lsn}) lacks commit ${sync.id} at ${sync.lsn}, acknowledged synchronously by ${sync.member}: an acknowledged commit was lost`,
    };
  }

  private checkLiveness(): void {
    const primaries = [...this.pg].filter(([, pg]) => pg.acceptsWrites());
    const leader = (this.store.get(KEYS.leader)?.value as LeaderRecord | undefined)?.member;
    const healthy =
      primaries.length === 1 &&
      primaries[0]![0] === leader &&
      this.agents.get(leader)!.state === 'primary' &&
      [...this.pg].every(([name, pg]) => name === leader || (pg.streamingFrom === leader && this.agents.get(name)!.state === 'replica'));
    if (healthy) {
      this.healthySince ??= this.trueTime;
      return;
    }
    this.healthySince = undefined;
    const healedAt = this.schedule.faultSteps * TICK_MS;
    if (this.trueTime - healedAt > LIVENESS_BOUND_MS) {
      const states = [...this.agents.values()].map((a) => `${a.name}=${a.state}(${this.pg.get(a.name)!.run}${this.pg.get(a.name)!.inRecovery ? ',standby' : ''}${this.pg.get(a.name)!.streamingFrom ? `,streams ${this.pg.get(a.name)!.streamingFrom}` : ''})`);
      this.violation = {
        kind: 'liveness',
        step: this.step,
        message: `${LIVENESS_BOUND_MS} ms after the faults healed there is still no single primary with every member streaming: leader ${leader ?? 'none'}; ${states.join(' ')}; last reasons: ${[...this.agents.values()].map((a) => `${a.name}: ${a.status?.reason ?? '-'}`).join(' | ')}`,
      };
    }
  }

  /** Healthy for a while after the heal: the schedule can end early. */
  settled(): boolean {
    return this.step > this.schedule.faultSteps && this.healthySince !== undefined && this.trueTime - this.healthySince >= 5_000;
  }
}

/** Runs one schedule: the fault phase, then up to LIVENESS_BOUND_MS (and a little) for the cluster to settle. */
export function runSchedule(schedule: Schedule, options: { traceAll?: boolean } = {}): RunResult {
  // A copy: a setQuorumMode fault replaces its settings, and the caller may replay the schedule.
  const world = new World({ ...schedule }, options.traceAll);
  const limit = schedule.faultSteps + LIVENESS_BOUND_MS / TICK_MS + 10;
  while (world.step < limit && !world.violation && !world.settled()) world.run(Math.min(limit, world.step + 50));
  return {
    seed: schedule.seed,
    steps: world.step,
    violation: world.violation,
    edges: world.edges,
    trace: world.trace,
    acknowledged: world.acknowledged,
    failovers: world.failovers,
    agentDownWindows: world.agentDownWindows,
    unacknowledgedFormerWrites: world.unacknowledgedFormerWrites,
    failsafeRounds: world.failsafeRounds,
  };
}

/** Greedy shrinking: drop faults one at a time while the same kind of violation still happens. */
export function minimise(schedule: Schedule, kind: Violation['kind']): Schedule {
  let current = schedule;
  for (let i = current.faults.length - 1; i >= 0; i--) {
    const candidate = { ...current, faults: current.faults.filter((_, j) => j !== i) };
    if (runSchedule(candidate).violation?.kind === kind) current = candidate;
  }
  return current;
}

export function faultIndices(original: Schedule, shrunk: Schedule): number[] {
  return shrunk.faults.map((f) => original.faults.indexOf(f));
}
