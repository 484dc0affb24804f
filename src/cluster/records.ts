import type { z } from 'zod';
import { describeIssues } from '../util/issues.js';
import type { KeyValue, LeaseId } from '../store/store.js';
import type { ClusterKeys } from './keys.js';
import { RouteRecordSchema } from './route.js';
import { ClusterSettingsSchema } from './settings.js';
import {
  FailoverRequestSchema,
  HistorySchema,
  InitRecordSchema,
  LeaderRecordSchema,
  MemberStatusSchema,
  OptimeSchema,
  QuorumRecordSchema,
  SlotRegistrySchema,
  SyncRecordSchema,
} from './types.js';

/**
 * Every record relevo keeps under `/relevo/<cluster>/`, each parsed on its own:
 * one damaged record is reported by its key and never makes the others unreadable.
 */
export type RecordKind = 'initialize' | 'leader' | 'config' | 'member' | 'slots' | 'sync' | 'quorum' | 'optime' | 'history' | 'failover' | 'route';

export const RECORD_SCHEMAS = {
  initialize: InitRecordSchema,
  leader: LeaderRecordSchema,
  config: ClusterSettingsSchema,
  member: MemberStatusSchema,
  slots: SlotRegistrySchema,
  sync: SyncRecordSchema,
  quorum: QuorumRecordSchema,
  optime: OptimeSchema,
  history: HistorySchema,
  failover: FailoverRequestSchema,
  route: RouteRecordSchema,
} satisfies Record<RecordKind, z.ZodTypeAny>;

/** Stable code of every report about a record that fails to parse. */
export const RECORD_UNREADABLE = 'RECORD_UNREADABLE';

/** A record present in the store that fails to parse: it is known to exist, its content is not. */
export interface UnreadableRecord {
  key: string;
  kind: RecordKind;
  /** For a member record: the member its key names. */
  member?: string;
  revision: number;
  /** What is wrong, e.g. "not JSON (…)" or "members: got a number; Expected array". */
  problem: string;
  /** Whose lease the key hangs on: this agent's (so the key is ours), another's, or none. */
  lease: 'own' | 'other' | 'none';
}

/** The kind of record a key holds, or undefined for keys relevo does not parse here (routers, unknown). */
export function recordKindOf(keys: ClusterKeys, key: string): { kind: RecordKind; member?: string } | undefined {
  if (key.startsWith(keys.membersPrefix)) return { kind: 'member', member: key.slice(keys.membersPrefix.length) };
  const single: [string, RecordKind][] = [
    [keys.initialize, 'initialize'],
    [keys.leader, 'leader'],
    [keys.config, 'config'],
    [keys.slots, 'slots'],
    [keys.sync, 'sync'],
    [keys.quorum, 'quorum'],
    [keys.optime, 'optime'],
    [keys.history, 'history'],
    [keys.failover, 'failover'],
    [keys.route, 'route'],
  ];
  const found = single.find(([k]) => k === key);
  return found && { kind: found[1] };
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };

/** Parses one stored value against its schema; never throws. */
export function parseRecord<T>(schema: z.ZodType<T>, text: string): Parsed<T> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    return { ok: false, problem: `not JSON (${(error as Error).message})` };
  }
  const result = schema.safeParse(raw);
  return result.success ? { ok: true, value: result.data } : { ok: false, problem: describeIssues(raw, result.error).join('; ') };
}

export function unreadableRecord(keys: ClusterKeys, kv: KeyValue, problem: string, ownLease?: LeaseId): UnreadableRecord {
  const kind = recordKindOf(keys, kv.key) ?? { kind: 'member' as const };
  return {
    key: kv.key,
    ...kind,
    revision: kv.revision,
    problem,
    lease: kv.lease === undefined ? 'none' : kv.lease === ownLease ? 'own' : 'other',
  };
}

/** What the operator can do about a damaged record, and what relevo does meanwhile. */
export function repairHint(record: UnreadableRecord): string {
  const del = `relevo store repair --delete ${record.key}`;
  const set = `relevo store repair --set ${record.key} --value '<json>'`;
  switch (record.kind) {
    case 'member':
      return `member ${record.member} counts as unknown meanwhile; its agent rewrites the record when it runs, or remove it with \`${del}\``;
    case 'leader':
      return `no member may promote while it is unreadable; remove it with \`${del}\` (the primary takes the lease again, or a failover follows)`;
    case 'sync':
      return `replicas refuse to promote while it is unreadable; the primary rewrites it once it has verified its synchronous standbys, or write it with \`${set}\``;
    case 'quorum':
      return `in quorum mode replicas refuse to promote while it is unreadable; the primary rewrites it by compare-and-swap (claiming nothing until its standbys are verified), or write it with \`${set}\``;
    case 'history':
      return `replicas refuse to promote while it is unreadable; write the timeline history back with \`${set}\` (\`relevo history\` on a backup of the store shows it)`;
    case 'optime':
      return `the primary rewrites it each loop; with no primary, replicas refuse to promote until it is removed with \`${del}\``;
    case 'failover':
      return `the primary removes it; or remove it with \`${del}\` and request the switchover again`;
    case 'slots':
      return `the primary rewrites it (no slot is dropped meanwhile); or remove it with \`${del}\``;
    case 'config':
      return `agents keep the settings they last read; write them with \`relevo store repair --set ${record.key} --value '<json>'\` or remove them with \`${del}\` (defaults apply)`;
    case 'route':
      return `routers hold new read-write connections while it is unreadable; write it with \`${set}\` (e.g. {"cluster":"<the cluster clients should use>","hold":false,"reason":"repair","updatedAt":"<ISO time>"})`;
    case 'initialize':
      return `no member initialises or checks the system identifier while it is unreadable; write it with \`${set}\``;
  }
}

/** One line naming the key, what is wrong and how to repair it. */
export function describeUnreadable(record: UnreadableRecord): string {
  return `${RECORD_UNREADABLE}: record ${record.key} (revision ${record.revision}) cannot be read: ${record.problem}. ${repairHint(record)}`;
}

/**
 * Reports each damaged record once per change (key and revision), so a
 * record that stays broken does not flood the log every loop.
 */
export class UnreadableReporter {
  private reported = new Set<string>();

  /** The records not reported yet at their current revision. */
  fresh(records: UnreadableRecord[]): UnreadableRecord[] {
    const now = new Set(records.map((r) => `${r.key}@${r.revision}`));
    const fresh = records.filter((r) => !this.reported.has(`${r.key}@${r.revision}`));
    this.reported = now;
    return fresh;
  }
}

/** A record an operation needs cannot be read: nothing was changed. */
export class RecordUnreadableError extends Error {
  readonly code = RECORD_UNREADABLE;
  constructor(readonly record: UnreadableRecord) {
    super(`${describeUnreadable(record)} Nothing was changed.`);
    this.name = 'RecordUnreadableError';
  }
}
