import type { KeyValue, LeaseId, Store } from '../store/store.js';
import type { ClusterKeys } from './keys.js';
import { parseRecord, RECORD_SCHEMAS, recordKindOf, unreadableRecord, type Parsed, type RecordKind, type UnreadableRecord } from './records.js';
import { defaultClusterSettings, type ClusterSettings } from './settings.js';
import type { FailoverRequest, HistoryEntry, InitRecord, LeaderRecord, MemberStatus, Optime, QuorumRecord, SlotRegistry, SyncRecord } from './types.js';

/** Store revision of each single record as read; absent when the key does not exist (a write then is an atomic create). */
export type RecordRevisions = Partial<Record<Exclude<RecordKind, 'member'>, number>>;

/**
 * The cluster as read from the store in one round trip. A record that fails
 * to parse is listed in `unreadable` and left out of the fields above it:
 * readers that decide safety (leader, sync, history) must check `unreadable`
 * and never take such a record as absent.
 */
export interface ClusterView {
  init: InitRecord | undefined;
  leader: (LeaderRecord & { revision: number }) | undefined;
  members: MemberStatus[];
  slotRegistry: SlotRegistry;
  sync: SyncRecord | undefined;
  /** Quorum commit record with its revision (compare-and-swap); absent outside quorum mode. */
  quorum?: (QuorumRecord & { revision: number }) | undefined;
  history: HistoryEntry[];
  optime: Optime | undefined;
  failover: FailoverRequest | undefined;
  revisions: RecordRevisions;
  unreadable: UnreadableRecord[];
}

export type ClusterRead =
  | { view: { reachable: false; error: string }; settings: ClusterSettings }
  /**
   * `settings` are the defaults when the config record is absent or unreadable (see `unreadable`).
   * `others`: the subtree's keys that are no cluster record (certificate rotation, routers…) as read, by key.
   */
  | { view: { reachable: true } & ClusterView; settings: ClusterSettings; others?: ReadonlyMap<string, KeyValue> };

/** Who reads: an agent passes its session lease so a damaged record hanging on it is known to be its own. */
export interface Reader {
  name: string;
  lease: LeaseId | undefined;
}

/**
 * The records parsed at the last read of each cluster subtree, by key: an agent reads the
 * subtree every loop and, at rest, nothing in it changed; parsing each record again (JSON
 * and its schema) was a good part of an idle agent's CPU. A record is parsed again whenever
 * its text differs. Readers treat the parsed records as read-only.
 */
const parsedCache = new Map<string, Map<string, { text: string; parsed: Parsed<unknown> }>>();

function parseCached(previous: Map<string, { text: string; parsed: Parsed<unknown> }> | undefined, next: Map<string, { text: string; parsed: Parsed<unknown> }>, kind: RecordKind, kv: KeyValue): Parsed<unknown> {
  const hit = previous?.get(kv.key);
  const parsed = hit && hit.text === kv.value ? hit.parsed : parseRecord<unknown>(RECORD_SCHEMAS[kind], kv.value);
  next.set(kv.key, { text: kv.value, parsed });
  return parsed;
}

/** Reads the whole cluster subtree in one round trip; each record is parsed on its own. */
export async function readCluster(store: Store, keys: ClusterKeys, reader?: Reader): Promise<ClusterRead> {
  let entries: KeyValue[];
  try {
    entries = await store.list(keys.root);
  } catch (error) {
    return { view: { reachable: false, error: (error as Error).message }, settings: defaultClusterSettings() };
  }
  const unreadable: UnreadableRecord[] = [];
  const revisions: RecordRevisions = {};
  const members: MemberStatus[] = [];
  const single: { [K in RecordKind]?: unknown } = {};
  const previous = parsedCache.get(keys.root);
  const next = new Map<string, { text: string; parsed: Parsed<unknown> }>();
  const others = new Map<string, KeyValue>();
  for (const kv of entries) {
    const kind = recordKindOf(keys, kv.key)?.kind;
    if (kind === undefined) {
      others.set(kv.key, kv);
      continue;
    }
    const parsed = parseCached(previous, next, kind, kv);
    // Readable or not, the revision is known: a writer replaces a damaged record by compare-and-swap on it.
    if (kind !== 'member') revisions[kind] = kv.revision;
    if (!parsed.ok) {
      unreadable.push(unreadableRecord(keys, kv, parsed.problem, reader?.lease));
      continue;
    }
    // The key names the member; a record claiming another name does not move it.
    if (kind === 'member') members.push({ ...(parsed.value as MemberStatus), name: kv.key.slice(keys.membersPrefix.length) });
    else single[kind] = parsed.value;
  }
  parsedCache.set(keys.root, next);
  const settings = (single.config as ClusterSettings | undefined) ?? defaultClusterSettings();
  const leaderRecord = single.leader as LeaderRecord | undefined;
  let leader = leaderRecord && { ...leaderRecord, revision: revisions.leader! };
  const badLeader = unreadable.find((r) => r.kind === 'leader');
  // The key hangs on our own session lease: we hold the leadership, only its content is damaged.
  if (badLeader?.lease === 'own' && reader) leader = { member: reader.name, ttlMs: settings.ttlMs, acquiredAt: '', revision: badLeader.revision };
  return {
    view: {
      reachable: true,
      init: single.initialize as InitRecord | undefined,
      leader,
      members,
      slotRegistry: (single.slots as SlotRegistry | undefined) ?? {},
      sync: single.sync as SyncRecord | undefined,
      quorum: single.quorum === undefined ? undefined : { ...(single.quorum as QuorumRecord), revision: revisions.quorum! },
      history: (single.history as HistoryEntry[] | undefined) ?? [],
      optime: single.optime as Optime | undefined,
      failover: single.failover as FailoverRequest | undefined,
      revisions,
      unreadable,
    },
    settings,
    others,
  };
}

/** The damaged record of this kind, if any (for a member record, that member's). */
export function unreadableOf(view: Pick<ClusterView, 'unreadable'>, kind: RecordKind, member?: string): UnreadableRecord | undefined {
  return view.unreadable.find((r) => r.kind === kind && (member === undefined || r.member === member));
}

/** Members whose status record is unreadable: unknown, never absent. */
export function unknownMembers(view: Pick<ClusterView, 'unreadable'>): string[] {
  return view.unreadable.flatMap((r) => (r.kind === 'member' && r.member ? [r.member] : []));
}
