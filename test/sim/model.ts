/**
 * The world the simulated agents live in: a coordination store (leases,
 * revisions, watches), PostgreSQL servers (WAL, timelines, synchronous
 * acknowledgement), a network and clocks. Deterministic: every random choice
 * comes from the seeded generator passed in. No I/O.
 */
import type { SlotStatus, ReplicationPeer } from '../../src/cluster/types.js';
import type { ServerInspection } from '../../src/postgres/inspect.js';

/** Mulberry32: small, fast, and the same on every machine. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
}

// ---------------------------------------------------------------- store

export interface Kv {
  value: unknown;
  revision: number;
  lease?: number;
}

/** An etcd-like store: one revision counter, leases that expire on the store's (true) clock. */
export class SimStore {
  readonly kv = new Map<string, Kv>();
  revision = 0;
  private nextLease = 1;
  readonly leases = new Map<number, number>();
  /** Keys changed since the last drain (for watches). */
  changed: string[] = [];

  get(key: string): Kv | undefined {
    return this.kv.get(key);
  }
  private set(key: string, value: unknown, lease?: number): number {
    this.revision++;
    this.kv.set(key, { value, revision: this.revision, lease });
    this.changed.push(key);
    return this.revision;
  }
  put(key: string, value: unknown, lease?: number): number {
    return this.set(key, value, lease);
  }
  create(key: string, value: unknown, lease?: number): number | undefined {
    if (this.kv.has(key)) return undefined;
    if (lease !== undefined && !this.leases.has(lease)) return undefined;
    return this.set(key, value, lease);
  }
  cas(key: string, value: unknown, revision: number): number | undefined {
    const current = this.kv.get(key);
    if (!current || current.revision !== revision) return undefined;
    return this.set(key, value, current.lease);
  }
  delete(key: string, revision?: number): boolean {
    const current = this.kv.get(key);
    if (!current || (revision !== undefined && current.revision !== revision)) return false;
    this.kv.delete(key);
    this.revision++;
    this.changed.push(key);
    return true;
  }
  grant(now: number, ttlMs: number): number {
    const id = this.nextLease++;
    this.leases.set(id, now + ttlMs);
    return id;
  }
  keepAlive(id: number, now: number, ttlMs: number): boolean {
    if (!this.leases.has(id)) return false;
    this.leases.set(id, now + ttlMs);
    return true;
  }
  revoke(id: number): void {
    this.leases.delete(id);
    for (const [key, kv] of [...this.kv]) if (kv.lease === id) this.delete(key);
  }
  expire(now: number): void {
    for (const [id, until] of [...this.leases]) if (until <= now) this.revoke(id);
  }
}

// ---------------------------------------------------------------- PostgreSQL

/** One WAL record: a client commit (id > 0) or a checkpoint/switch record (id < 0), unique across the run. */
export interface Rec {
  id: number;
}

/** A timeline: its number as PostgreSQL names it (two forks may share a number), and where it forked. */
export interface Timeline {
  uid: number;
  number: number;
  parent: Timeline | undefined;
  forkAt: number;
}

export interface Pending {
  id: number;
  lsn: number;
  /** Acknowledged only once a synchronous standby flushed it (synchronous_standby_names was not empty). */
  synchronous: boolean;
}

export class SimPostgres {
  data: 'empty' | 'initialized' = 'empty';
  wal: Rec[] = [];
  tl: Timeline | undefined;
  run: 'stopped' | 'running' | 'hung' = 'stopped';
  inRecovery = false;
  standbySignal = false;
  upstream: string | null = null;
  ssn = '';
  /** ALTER SYSTEM read-only + synchronous_standby_names = relevo_fenced (cleared by startPostgres). */
  fenced = false;
  cleanShutdown = true;
  slots = new Set<string>();
  /** Member this standby streams from this tick (null: not streaming). */
  streamingFrom: string | null = null;
  /** Highest flush position released to waiting commits (PostgreSQL never lowers it while running). */
  syncReleased = 0;
  pending: Pending[] = [];
  openTransactions = 0;
  /** A stop signal sent while hung: delivered the moment it resumes. */
  stopPending = false;

  get lsn(): number {
    return this.wal.length;
  }
  acceptsWrites(): boolean {
    return this.run === 'running' && !this.inRecovery && !this.fenced;
  }
  answers(): boolean {
    return this.run === 'running';
  }
  crash(): void {
    this.run = 'stopped';
    this.cleanShutdown = false;
    this.lose();
  }
  /** Sessions end: waiting commits are never acknowledged. */
  lose(): void {
    this.pending = [];
    this.streamingFrom = null;
    this.syncReleased = 0;
  }
}

export function lsnText(position: number): string {
  return `0/${(0x1000000 + position * 0x100).toString(16).toUpperCase()}`;
}

export function lsnPosition(text: string): number {
  const [, low] = text.split('/');
  return (parseInt(low!, 16) - 0x1000000) / 0x100;
}

/** Whether `standby` can stream from `source`: its WAL is a prefix of the source's, on a timeline the source descends from. */
export function canFollow(standby: SimPostgres, source: SimPostgres): boolean {
  if (!standby.tl || !source.tl) return false;
  const n = standby.wal.length;
  if (n > source.wal.length) return false;
  if (n > 0 && source.wal[n - 1]!.id !== standby.wal[n - 1]!.id) return false;
  for (let t: Timeline | undefined = source.tl; t; t = t.parent) if (t.uid === standby.tl.uid) return true;
  return false;
}

/** Common prefix length of two WALs. */
export function commonPrefix(a: Rec[], b: Rec[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i]!.id === b[i]!.id) i++;
  return i;
}

/** Names from `FIRST k (...)`; '' is asynchronous. */
/** `any`: ANY k (quorum: any k of the names), else FIRST k (the first k connected, in order). */
export function parseStandbyNames(ssn: string): { count: number; names: string[]; any: boolean } | undefined {
  if (ssn === '') return undefined;
  const match = /^(FIRST|ANY) (\d+) \((.*)\)$/.exec(ssn);
  if (!match) return { count: 1, names: [ssn], any: false };
  return { count: Number(match[2]), names: match[3]!.split(',').map((n) => n.trim().replace(/^"|"$/g, '')), any: match[1] === 'ANY' };
}

export function inspect(pg: SimPostgres, name: string, all: Map<string, SimPostgres>): ServerInspection {
  const tl = pg.tl?.number ?? 1;
  const streamers = [...all].filter(([n, other]) => n !== name && other.run === 'running' && other.streamingFrom === name);
  const slots: SlotStatus[] = [...pg.slots].sort().map((s) => ({ name: s, active: streamers.some(([n]) => n === s), restartLsn: null, retainedBytes: null }));
  const common = {
    version: '15.sim',
    timeline: tl,
    receivedLsn: lsnText(pg.lsn),
    replayedLsn: lsnText(pg.lsn),
    replayPaused: false,
    lagSeconds: 0,
    slots,
    synchronousStandbyNames: pg.ssn,
    pendingRestart: [] as string[],
  };
  if (pg.inRecovery) {
    const streaming = pg.streamingFrom !== null;
    return {
      ...common,
      inRecovery: true,
      streaming,
      receivedTimeline: streaming ? tl : null,
      upstreamConninfo: pg.upstream ? `host=${pg.upstream}` : null,
      openTransactions: 0,
      replication: [],
    };
  }
  const sync = parseStandbyNames(pg.ssn);
  const connected = sync ? sync.names.filter((n) => streamers.some(([s]) => s === n)).slice(0, sync.any ? undefined : sync.count) : [];
  const replication: ReplicationPeer[] = streamers.map(([n, s]) => ({
    member: n,
    state: 'streaming',
    syncState: connected.includes(n) ? (sync?.any ? 'quorum' : 'sync') : sync?.names.includes(n) ? 'potential' : 'async',
    sentLsn: lsnText(s.lsn),
    flushLsn: lsnText(s.lsn),
    replayLsn: lsnText(s.lsn),
    replayLagSeconds: 0,
  }));
  return { ...common, inRecovery: false, streaming: false, receivedTimeline: null, upstreamConninfo: null, replication, openTransactions: pg.openTransactions };
}
