/**
 * The chaos checker: pure functions over what the run recorded (faults,
 * acknowledged commits, reads, the ids present on the final primary), so the
 * rules are unit-tested apart from the lab.
 *
 *  - lost: an acknowledged id missing on the final primary; charged to the
 *    fault whose window (its start to the next fault's start) holds the ack.
 *  - overlap (invariant 1): a commit acknowledged by member X after another
 *    member Y had already acknowledged one on the same or a later timeline.
 *    That is two members acknowledging writes in overlapping intervals.
 *  - stale read: a read through the read-only listener from a replica whose
 *    replay position was more than the router's byte limit behind what the
 *    primary of that timeline had acknowledged `graceMs` before the read
 *    (the grace covers how old the router's view of the lag may be).
 *  - unavailability: the longest stretch without an acknowledgement from the
 *    fault to convergence (the first ack after convergence closes it).
 */
import type { Ack } from '../helpers/writer.js';
import type { Read } from './reader.js';

export type Mode = 'sync' | 'async';

export interface FaultRecord {
  index: number;
  kind: string;
  mode: Mode;
  /** Host or member the fault hit. */
  target: string;
  detail: string;
  /** Primary before the fault. */
  primaryBefore: string;
  at: number;
  healedAt: number;
  /** One primary, every other member streaming, etcd healthy; null: never within the bound. */
  convergedAt: number | null;
  primaryAfter: string | null;
  error?: string;
}

export interface WriterLog {
  /** 'multi-host' (libpq-style multi-host string) or 'router'. */
  name: string;
  acks: Ack[];
  /** Ids present on the final primary (null: could not be read). */
  present: Set<number> | null;
}

export interface FaultVerdict {
  index: number;
  kind: string;
  mode: Mode;
  target: string;
  /** Per writer: acks inside this fault's window, lost among them, unavailability ms. */
  writers: Record<string, { acked: number; lost: number; unavailableMs: number | null; overlapping: number; lostSpanMs?: number }>;
  convergeMs: number | null;
  staleReads: number;
}

export interface Violation {
  rule: 'lost-sync' | 'overlap' | 'stale-read' | 'no-convergence' | 'amcheck' | 'final-state';
  fault: number | null;
  detail: string;
}

export function lsnToNumber(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}

/** Index of the fault whose window holds time t (-1: before the first fault). */
export function windowOf(faults: FaultRecord[], t: number): number {
  let found = -1;
  for (let i = 0; i < faults.length; i++) if (faults[i]!.at <= t) found = i;
  return found;
}

/**
 * Acks that overlap another member's acknowledgements: given after another
 * member had acknowledged on a later timeline (a former primary still
 * serving), or inside another member's reign on the same timeline number (its
 * first acknowledgement to its last; two promotions from one parent can reuse a
 * number, so a later reign on the same number alone is no overlap).
 */
export function overlappingAcks(acks: Ack[]): Ack[] {
  const reigns = new Map<string, { server: string; timeline: number; firstAckedAt: number; lastSentAt: number }>();
  for (const a of acks) {
    if (a.timeline === undefined) continue;
    const key = `${a.server}/${a.timeline}`;
    const r = reigns.get(key);
    if (!r) reigns.set(key, { server: a.server, timeline: a.timeline, firstAckedAt: a.ackedAt, lastSentAt: a.sentAt });
    else {
      r.firstAckedAt = Math.min(r.firstAckedAt, a.ackedAt);
      r.lastSentAt = Math.max(r.lastSentAt, a.sentAt);
    }
  }
  const list = [...reigns.values()];
  return acks.filter(
    (a) =>
      a.timeline !== undefined &&
      list.some(
        (g) =>
          g.server !== a.server &&
          g.firstAckedAt < a.sentAt &&
          (g.timeline > a.timeline! || (g.timeline === a.timeline && a.ackedAt < g.lastSentAt)),
      ),
  );
}

/** Reads from a replica further behind than maxLagBytes, measured against acks of its timeline at least graceMs older than the read. */
export function staleReads(reads: Read[], acks: Ack[], maxLagBytes: number, graceMs: number): Array<Read & { lagBytes: bigint }> {
  const byTimeline = new Map<number, Ack[]>();
  for (const a of acks) {
    if (a.timeline === undefined || a.lsn === null) continue;
    const list = byTimeline.get(a.timeline) ?? [];
    list.push(a);
    byTimeline.set(a.timeline, list);
  }
  for (const list of byTimeline.values()) list.sort((x, y) => x.ackedAt - y.ackedAt);
  const out: Array<Read & { lagBytes: bigint }> = [];
  for (const r of reads) {
    if (!r.inRecovery || r.timeline === null) continue;
    const list = byTimeline.get(r.timeline);
    if (!list) continue;
    let reference: bigint | undefined;
    for (const a of list) {
      if (a.ackedAt > r.at - graceMs) break;
      const lsn = lsnToNumber(a.lsn!);
      if (reference === undefined || lsn > reference) reference = lsn;
    }
    if (reference === undefined) continue;
    const lag = reference - lsnToNumber(r.lsn);
    if (lag > BigInt(maxLagBytes)) out.push({ ...r, lagBytes: lag });
  }
  return out;
}

/** Longest stretch without an ack from `from` to `to` (closed by the first ack after `to`, else `to`). */
export function longestGap(acks: Ack[], from: number, to: number): number {
  let previous = from;
  let longest = 0;
  for (const a of acks) {
    if (a.ackedAt < from) continue;
    longest = Math.max(longest, a.ackedAt - previous);
    previous = a.ackedAt;
    if (a.ackedAt > to) return longest;
  }
  return Math.max(longest, to - previous);
}

export interface CheckInput {
  faults: FaultRecord[];
  writers: WriterLog[];
  reads: Read[];
  maxLagBytes: number;
  graceMs: number;
  /** pg_amcheck outcome per member. */
  amcheck: Record<string, { ok: boolean; output: string }>;
  /** Problems with the final state (e.g. not one primary). */
  finalProblems: string[];
  /** Runs in async mode where overlapping primaries are expected until the fence lands: reported, not counted as violations. */
  tolerateAsyncOverlap?: boolean;
}

export interface CheckResult {
  perFault: FaultVerdict[];
  violations: Violation[];
  /** Reported but, by the run's choice (tolerateAsyncOverlap), not violations. */
  knownIssues: Violation[];
  totals: Record<Mode, Record<string, { acked: number; lost: number }>>;
  overlapping: number;
  staleReads: number;
  reads: number;
}

export function check(input: CheckInput): CheckResult {
  const { faults } = input;
  const perFault: FaultVerdict[] = faults.map((f) => ({
    index: f.index,
    kind: f.kind,
    mode: f.mode,
    target: f.target,
    writers: {},
    convergeMs: f.convergedAt === null ? null : f.convergedAt - f.healedAt,
    staleReads: 0,
  }));
  const violations: Violation[] = [];
  const knownIssues: Violation[] = [];
  const totals: CheckResult['totals'] = { sync: {}, async: {} };
  // Across both writers: a router session and a multi-host session may each see a different primary.
  const overlapping = new Set(overlappingAcks(input.writers.flatMap((w) => w.acks)));
  const overlappingTotal = overlapping.size;
  for (const w of input.writers) {
    for (const v of perFault) v.writers[w.name] = { acked: 0, lost: 0, unavailableMs: null, overlapping: 0 };
    const lostByFault = new Map<number, number[]>();
    for (const a of w.acks) {
      const i = windowOf(faults, a.ackedAt);
      const mode: Mode = i >= 0 ? faults[i]!.mode : (faults[0]?.mode ?? 'sync');
      const t = (totals[mode][w.name] ??= { acked: 0, lost: 0 });
      t.acked++;
      const lost = w.present !== null && !w.present.has(a.id);
      if (lost) t.lost++;
      if (i < 0) {
        if (lost && mode === 'sync') violations.push({ rule: 'lost-sync', fault: null, detail: `${w.name}: id ${a.id} acknowledged by ${a.server} before any fault is missing` });
        continue;
      }
      const slot = perFault[i]!.writers[w.name]!;
      slot.acked++;
      if (lost) {
        slot.lost++;
        const list = lostByFault.get(i) ?? [];
        list.push(a.id);
        lostByFault.set(i, list);
      }
      if (overlapping.has(a)) slot.overlapping++;
    }
    for (const [i, ids] of lostByFault) {
      // How much time the lost commits cover: from the first one's send to the last one's acknowledgement.
      const lostIds = new Set(ids);
      const lostAcks = w.acks.filter((a) => lostIds.has(a.id));
      perFault[i]!.writers[w.name]!.lostSpanMs = Math.max(...lostAcks.map((a) => a.ackedAt)) - Math.min(...lostAcks.map((a) => a.sentAt));
      if (faults[i]!.mode !== 'sync') continue;
      violations.push({ rule: 'lost-sync', fault: i, detail: `${w.name}: ${ids.length} acknowledged commits lost in sync mode (ids ${ids.slice(0, 5).join(', ')}${ids.length > 5 ? ', …' : ''})` });
    }
    for (const v of perFault) {
      const f = faults[v.index]!;
      const slot = v.writers[w.name]!;
      slot.unavailableMs = longestGap(w.acks, f.at, f.convergedAt ?? f.healedAt);
      if (slot.overlapping > 0) {
        const sample = w.acks.find((a) => overlapping.has(a) && windowOf(faults, a.ackedAt) === v.index)!;
        const entry: Violation = {
          rule: 'overlap',
          fault: v.index,
          detail: `${w.name}: ${slot.overlapping} commits acknowledged by a member after another member had acknowledged on the same or a later timeline (first: id ${sample.id} by ${sample.server} on timeline ${sample.timeline}, sent ${new Date(sample.sentAt).toISOString()})`,
        };
        (f.mode === 'async' && input.tolerateAsyncOverlap ? knownIssues : violations).push(entry);
      }
    }
  }
  const allAcks = input.writers.flatMap((w) => w.acks);
  const stale = staleReads(input.reads, allAcks, input.maxLagBytes, input.graceMs);
  for (const r of stale) {
    const i = windowOf(faults, r.at);
    if (i >= 0) perFault[i]!.staleReads++;
  }
  if (stale.length > 0) {
    const r = stale[0]!;
    violations.push({ rule: 'stale-read', fault: windowOf(faults, r.at), detail: `${stale.length} reads from a replica past the lag limit (first: ${r.server} at ${new Date(r.at).toISOString()}, ${r.lagBytes} B behind)` });
  }
  for (const f of faults) {
    if (f.convergedAt === null) violations.push({ rule: 'no-convergence', fault: f.index, detail: `${f.kind} on ${f.target}: ${f.error ?? 'no single primary with every other member streaming within the bound'}` });
  }
  for (const [member, result] of Object.entries(input.amcheck)) {
    if (!result.ok) violations.push({ rule: 'amcheck', fault: null, detail: `${member}: ${result.output.slice(0, 500)}` });
  }
  for (const p of input.finalProblems) violations.push({ rule: 'final-state', fault: null, detail: p });
  return { perFault, violations, knownIssues, totals, overlapping: overlappingTotal, staleReads: stale.length, reads: input.reads.length };
}

export interface ReadBackCandidate {
  name: string;
  recovery: boolean;
  timeline: number;
  lsn: bigint;
}

/**
 * Where to verify acknowledged commits when the cluster did not converge:
 * a member running as primary before any standby, then the newest timeline,
 * then the furthest WAL position (what the cluster would keep).
 */
export function pickReadBack(seen: readonly ReadBackCandidate[]): ReadBackCandidate | undefined {
  return [...seen].sort((a, b) => Number(a.recovery) - Number(b.recovery) || b.timeline - a.timeline || (b.lsn > a.lsn ? 1 : b.lsn < a.lsn ? -1 : 0))[0];
}
