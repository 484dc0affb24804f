/**
 * The router's decision for one new client connection, as pure functions of
 * what the store last said, the clock and the current connection counts.
 * No I/O and no hidden clock: the router passes `now` in, tests pass any.
 */
import type { FailoverRequest, LeaderRecord, MemberStatus } from '../cluster/types.js';
import { refusal, type Refusal } from './errors.js';
import { grantValid, type FailsafeGrant } from './failsafe.js';

/** Value of the `failover` key while a switchover (or requested failover) runs. */
export type FailoverRecord = Pick<FailoverRequest, 'kind' | 'from' | 'to' | 'requestedAt'>;

/** The part of the store the router reads. */
export interface StoreSnapshot {
  leader: LeaderRecord | undefined;
  members: ReadonlyMap<string, MemberStatus>;
  failover: FailoverRecord | undefined;
  /**
   * Set while the route record holds writes (a blue/green upgrade's pause) or
   * while the router has not yet read the cluster it was just pointed at:
   * read-write connections wait, as during a switchover.
   */
  hold?: string | undefined;
}

export interface SelectionSettings {
  /** Replicas further behind than this many bytes get no read-only connections; null = no limit. */
  maxLagBytes: number | null;
  /** Same, in seconds of replay lag, applied when the member knows it; null = no limit. */
  maxLagSeconds: number | null;
  /** Send read-only connections to the primary when no replica qualifies. */
  fallbackToPrimary: boolean;
  /** Require replicas to be streaming from their upstream (not only replaying archived WAL). */
  requireStreaming: boolean;
  /** Lease TTL assumed while no leader record was ever read (the record carries the real one). */
  defaultTtlMs: number;
}

export interface Backend {
  member: string;
  host: string;
  port: number;
  /** "host:port" as published by the member. */
  address: string;
}

export type Decision =
  | {
      action: 'route';
      backend: Backend;
      /** routed to the primary (RW, or RO fallback) */
      primary: boolean;
      /** The lease holder has not published that it is primary yet: the caller must check it takes writes. */
      promoting?: true;
    }
  | { action: 'hold'; reason: string }
  | { action: 'refuse'; refusal: Refusal };

export interface ViewInput {
  snapshot: StoreSnapshot;
  settings: SelectionSettings;
  now: number;
  /** When the last successful full read of the store started; undefined if none yet. */
  lastStoreReadAt: number | undefined;
  /** Open connections per member on the listener being decided for. */
  connections: ReadonlyMap<string, number>;
  /**
   * The caller can see for itself whether a server takes writes (session
   * mode: the in_hot_standby parameter), so the lease holder may be tried
   * before it has published that its promotion finished.
   */
  acceptPromoting?: boolean;
  /**
   * The primary's agent confirmed failsafe (src/router/failsafe.ts): passed
   * during a store outage, and after it while the store names no leader.
   */
  failsafe?: FailsafeGrant;
}

/** Parses "host:port" or "[v6]:port"; undefined when malformed. Port 0 only for listening. */
export function parseAddress(address: string, allowPortZero = false): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(address.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < (allowPortZero ? 0 : 1) || port > 65_535) return undefined;
  return { host: (m[1] ?? m[2]) as string, port };
}

function backendOf(member: MemberStatus): Backend | undefined {
  const parsed = parseAddress(member.connectAddress);
  return parsed && { member: member.name, address: member.connectAddress, ...parsed };
}

/** How long the store may stay unread before the router stops trusting its view. */
export function storeStaleness(input: Pick<ViewInput, 'snapshot' | 'settings' | 'now' | 'lastStoreReadAt'>): {
  stale: boolean;
  ageMs: number | null;
  ttlMs: number;
} {
  const ttlMs = input.snapshot.leader?.ttlMs ?? input.settings.defaultTtlMs;
  if (input.lastStoreReadAt === undefined) return { stale: true, ageMs: null, ttlMs };
  const ageMs = input.now - input.lastStoreReadAt;
  return { stale: ageMs > ttlMs, ageMs, ttlMs };
}

/**
 * True while a planned switchover is under way: the `failover` key is
 * present and the new primary does not hold the lease yet.
 */
export function switchoverInProgress(snapshot: StoreSnapshot): boolean {
  if (snapshot.hold !== undefined) return true;
  const f = snapshot.failover;
  if (!f) return false;
  const leader = snapshot.leader?.member;
  if (leader === undefined) return true;
  if (f.to !== null && leader === f.to) return false;
  return leader === f.from;
}

/** The member connections on the read-write port go to, if any (ignores staleness). */
export function currentPrimary(snapshot: StoreSnapshot): Backend | undefined {
  const leader = snapshot.leader;
  if (!leader) return undefined;
  const member = snapshot.members.get(leader.member);
  if (!member || member.role !== 'primary') return undefined;
  return backendOf(member);
}

/**
 * The member under a valid failsafe grant and where to reach it: it takes
 * writes however old the view is, and whatever the store said since the
 * router last read it in full, unless its last status says it is not primary.
 */
function failsafeBackend(input: Pick<ViewInput, 'snapshot' | 'now' | 'failsafe'>): Backend | undefined {
  const grant = input.failsafe;
  if (!grantValid(grant, input.now)) return undefined;
  const status = input.snapshot.members.get(grant.member);
  if (status && status.role !== 'primary') return undefined;
  // Its member key may be gone with a revoked lease: the address it had when its agent confirmed.
  const address = status?.connectAddress ?? grant.address;
  const parsed = parseAddress(address);
  return parsed && { member: grant.member, address, ...parsed };
}

/** The member read-write sessions belong to now: the lease holder while the view is fresh, or the primary under a failsafe grant. */
export function routedPrimary(input: Pick<ViewInput, 'snapshot' | 'settings' | 'now' | 'lastStoreReadAt' | 'failsafe'>): { member: string | undefined; failsafe: boolean } {
  const granted = failsafeBackend(input);
  if (granted) return { member: granted.member, failsafe: true };
  return { member: storeStaleness(input).stale ? undefined : input.snapshot.leader?.member, failsafe: false };
}

/** Decision for a new connection on the read-write port. */
export function pickReadWrite(input: ViewInput): Decision {
  const staleness = storeStaleness(input);
  const { snapshot } = input;
  const granted = failsafeBackend(input);
  // A switchover under way when the store went: hold or refuse as without failsafe.
  if (granted && !switchoverInProgress(snapshot)) return { action: 'route', backend: granted, primary: true };
  if (staleness.stale) return { action: 'refuse', refusal: refusal('store-unreadable', staleness) };
  if (switchoverInProgress(snapshot)) {
    return { action: 'hold', reason: snapshot.hold ?? `switchover from ${snapshot.failover?.from ?? '?'} in progress` };
  }
  const leader = snapshot.leader;
  if (!leader) return { action: 'refuse', refusal: refusal('no-primary') };
  const member = snapshot.members.get(leader.member);
  // The lease moves before the new primary finishes promotion: wait for it rather than fail.
  if (!member) return { action: 'hold', reason: `leader ${leader.member} has not published its status yet` };
  const promoting = member.role !== 'primary';
  if (promoting && !input.acceptPromoting) {
    return { action: 'hold', reason: `leader ${leader.member} is ${member.role}, waiting for promotion` };
  }
  const backend = backendOf(member);
  if (!backend) {
    return { action: 'refuse', refusal: refusal('bad-address', { member: member.name, address: member.connectAddress }) };
  }
  return promoting ? { action: 'route', backend, primary: true, promoting: true } : { action: 'route', backend, primary: true };
}

export interface Exclusion {
  member: string;
  reason: string;
}

/** Replicas that may take read-only connections, and why the others may not. */
export function readOnlyCandidates(
  snapshot: StoreSnapshot,
  settings: SelectionSettings,
): { eligible: Backend[]; excluded: Exclusion[] } {
  const eligible: Backend[] = [];
  const excluded: Exclusion[] = [];
  const leader = snapshot.leader?.member;
  for (const m of [...snapshot.members.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (m.name === leader || m.role === 'primary') continue;
    const why = exclusionReason(m, settings);
    const backend = backendOf(m);
    if (why) excluded.push({ member: m.name, reason: why });
    else if (!backend) excluded.push({ member: m.name, reason: `unusable address "${m.connectAddress}"` });
    else eligible.push(backend);
  }
  return { eligible, excluded };
}

function exclusionReason(m: MemberStatus, s: SelectionSettings): string | undefined {
  if (m.role !== 'replica') return `role is ${m.role}`;
  // A delayed replica (docs/undo.md) serves old data: only when its member file says routeReads.
  if (m.tags.noloadbalance === true) return 'tagged noloadbalance';
  if (m.replayPaused) return 'replay is paused';
  if (s.requireStreaming && !m.streaming) return 'not streaming';
  if (s.maxLagBytes !== null) {
    if (m.lagBytes === null) return 'lag in bytes unknown';
    if (m.lagBytes > s.maxLagBytes) return `lag ${m.lagBytes} B over limit ${s.maxLagBytes} B`;
  }
  // Replay lag in seconds is unknown while the primary writes nothing; the byte limit covers that case.
  if (s.maxLagSeconds !== null && m.lagSeconds !== null && m.lagSeconds > s.maxLagSeconds) {
    return `lag ${m.lagSeconds} s over limit ${s.maxLagSeconds} s`;
  }
  return undefined;
}

/**
 * Decision for a new connection on the read-only port: the eligible replica
 * with the fewest connections (ties by name), else the primary if allowed.
 * A stale store still allows replicas (they accept no writes) but never the
 * primary fallback, whose identity is exactly what a stale view cannot tell.
 */
export function pickReadOnly(input: ViewInput): Decision {
  const { snapshot, settings, connections } = input;
  const { eligible, excluded } = readOnlyCandidates(snapshot, settings);
  let best: Backend | undefined;
  let bestCount = Infinity;
  for (const b of eligible) {
    const count = connections.get(b.member) ?? 0;
    if (count < bestCount) {
      best = b;
      bestCount = count;
    }
  }
  if (best) return { action: 'route', backend: best, primary: false };
  const staleness = storeStaleness(input);
  if (settings.fallbackToPrimary && !staleness.stale) {
    const rw = pickReadWrite(input);
    if (rw.action !== 'refuse') return rw;
  }
  if (staleness.stale && eligible.length === 0 && snapshot.members.size === 0) {
    return { action: 'refuse', refusal: refusal('store-unreadable', staleness) };
  }
  return { action: 'refuse', refusal: refusal('no-replica', { excluded }) };
}
