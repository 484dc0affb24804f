import { readCluster } from './view.js';
import { StoreUnavailableError } from '../store/errors.js';
import { hintOf, type ErrorCode } from '../errors/catalogue.js';
import { RecordUnreadableError, type RecordKind } from './records.js';
import { candidateOf, eligibility } from '../agent/election.js';
import type { Store } from '../store/store.js';
import type { ClusterKeys } from './keys.js';
import { readStoredSettings, writeStoredSettings } from './settings-store.js';
import type { FailoverRequest, HistoryEntry, MemberStatus } from './types.js';
import { promotionVersionCheck } from './versions.js';

/**
 * Operator requests that change the cluster, shared by the CLI and the REST
 * API. Each validates first and changes nothing when the request is impossible,
 * throwing an OperationError whose message says why.
 */
export class OperationError extends Error {
  readonly hint: string;
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'OperationError';
    this.hint = hintOf(code);
  }
}

/** The cluster as read; `needs`: records the operation decides on, which must be readable (never taken as absent). */
async function reachableView(store: Store, keys: ClusterKeys, needs: RecordKind[] = []) {
  const { view, settings } = await readCluster(store, keys);
  if (!view.reachable) throw new StoreUnavailableError(store.backend, view.error);
  const bad = view.unreadable.find((r) => needs.includes(r.kind));
  if (bad) throw new RecordUnreadableError(bad);
  return { view, settings };
}

function streamingReplica(members: MemberStatus[], name: string, leader: string | undefined): MemberStatus {
  const member = members.find((m) => m.name === name);
  if (!member) throw new OperationError('UNKNOWN_MEMBER', `unknown member "${name}": known members are ${members.map((m) => m.name).join(', ') || 'none'}`);
  if (name === leader) throw new OperationError('ALREADY_PRIMARY', `member ${name} is already the primary`);
  if (member.role !== 'replica' || member.state !== 'replica') throw new OperationError('NOT_A_RUNNING_REPLICA', `member ${name} is not a running replica (state ${member.state})`);
  // A delayed replica (docs/undo.md) is behind by design: not even --force promotes it.
  if (typeof member.tags.applyDelayMs === 'number') {
    throw new OperationError('DELAYED_REPLICA', `member ${name} is a delayed replica (delay ${member.tags.applyDelayMs} ms): never promoted; remove \`delay\` from its member file and restart its agent first`);
  }
  return member;
}

/** Refuses a candidate on another major version; returns a warning for an older minor one. */
function checkVersion(members: MemberStatus[], candidate: MemberStatus, leader: string | undefined): string | undefined {
  const reference = members.filter((m) => (leader ? m.name === leader : m.name !== candidate.name));
  const verdict = promotionVersionCheck(candidate, reference);
  if (verdict.refuse) throw new OperationError('MAJOR_VERSION_MISMATCH', verdict.refuse);
  return verdict.warn;
}

export interface SwitchoverOptions {
  to?: string;
  at?: string;
  /** Told about an allowed but unusual choice (an older minor version). */
  warn?: (message: string) => void;
}

export async function requestSwitchover(store: Store, keys: ClusterKeys, options: SwitchoverOptions): Promise<FailoverRequest> {
  const { view, settings } = await reachableView(store, keys, ['leader', 'config', 'failover']);
  if (settings.paused) throw new OperationError('CLUSTER_PAUSED', 'the cluster is paused: run `relevo resume` first');
  const leader = view.leader?.member;
  if (!leader) throw new OperationError('NO_PRIMARY', 'no primary holds the leader lease: a switchover needs a running primary (use `relevo failover --to M`)');
  let at: string | null = null;
  if (options.at !== undefined) {
    const time = Date.parse(options.at);
    if (Number.isNaN(time)) throw new OperationError('BAD_TIME', `--at: got "${options.at}", expected an ISO time such as 2026-11-21T22:00:00Z`);
    at = new Date(time).toISOString();
  }
  if (options.to !== undefined) {
    const candidate = streamingReplica(view.members, options.to, leader);
    if (!candidate.streaming) throw new OperationError('NOT_STREAMING', `member ${options.to} is not streaming from the primary`);
    if (candidate.lagBytes === null || candidate.lagBytes > settings.maximumLagOnFailover) {
      throw new OperationError(
        'CANDIDATE_LAGGING',
        `member ${options.to} is ${candidate.lagBytes ?? 'an unknown number of'} bytes behind the primary, more than maximumLagOnFailover=${settings.maximumLagOnFailover}: it may never catch up; pick another member or wait`,
      );
    }
    if (candidate.tags.nofailover === true) throw new OperationError('CANDIDATE_NOFAILOVER', `member ${options.to} is tagged nofailover`);
    const warning = checkVersion(view.members, candidate, leader);
    if (warning) options.warn?.(warning);
  } else if (!view.members.some((m) => m.name !== leader && m.state === 'replica' && m.streaming && m.tags.nofailover !== true)) {
    throw new OperationError('NO_HEALTHY_CANDIDATE', 'no streaming replica to switch over to');
  }
  if (view.failover) throw new OperationError('OPERATION_IN_PROGRESS', `a ${view.failover.kind} is already in progress (requested ${view.failover.requestedAt})`);
  const request: FailoverRequest = { kind: 'switchover', from: leader, to: options.to ?? null, at, force: false, requestedAt: new Date().toISOString(), shutdownLsn: null };
  if ((await store.create(keys.failover, JSON.stringify(request))) === undefined) throw new OperationError('CONCURRENT_CHANGE', 'another switchover or failover was requested at the same moment');
  return request;
}

/**
 * Manual failover to a named member. With a live primary it is a switchover;
 * without one, the member is promoted. Refuses a candidate that may lack
 * acknowledged commits unless forced.
 */
export async function requestFailover(store: Store, keys: ClusterKeys, to: string, force: boolean): Promise<FailoverRequest> {
  const { view, settings } = await reachableView(store, keys, ['leader', 'config', 'failover', 'sync', 'history', 'optime']);
  const leader = view.leader?.member;
  if (leader) return requestSwitchover(store, keys, { to });
  const candidate = streamingReplica(view.members, to, leader);
  checkVersion(view.members, candidate, undefined);
  const verdict = eligibility(settings, view, candidateOf(candidate));
  if (!verdict.eligible && !force) throw new OperationError('CANDIDATE_NOT_ELIGIBLE', `refusing to fail over to ${to}: ${verdict.reason}; this could lose acknowledged commits — add --force to do it anyway`);
  if (view.failover) throw new OperationError('OPERATION_IN_PROGRESS', `a ${view.failover.kind} is already in progress (requested ${view.failover.requestedAt})`);
  const request: FailoverRequest = { kind: 'failover', from: null, to, at: null, force, requestedAt: new Date().toISOString(), shutdownLsn: null };
  if ((await store.create(keys.failover, JSON.stringify(request))) === undefined) throw new OperationError('CONCURRENT_CHANGE', 'another switchover or failover was requested at the same moment');
  return request;
}

export async function setPaused(store: Store, keys: ClusterKeys, paused: boolean): Promise<void> {
  const read = await readStoredSettings(store, keys);
  if (read.settings.paused && paused) throw new OperationError('ALREADY_PAUSED', 'the cluster is already paused');
  if (!read.settings.paused && !paused) throw new OperationError('NOT_PAUSED', 'the cluster is not paused');
  if (!(await writeStoredSettings(store, keys, { ...read.settings, paused }, read))) throw new OperationError('CONCURRENT_CHANGE', 'cluster settings changed concurrently; nothing written, try again');
}

export async function readHistory(store: Store, keys: ClusterKeys): Promise<HistoryEntry[]> {
  const { view } = await reachableView(store, keys, ['history']);
  return view.history;
}

export async function memberStatusOf(store: Store, keys: ClusterKeys, name: string): Promise<MemberStatus> {
  const { view } = await reachableView(store, keys);
  const member = view.members.find((m) => m.name === name);
  if (!member) throw new OperationError('UNKNOWN_MEMBER', `unknown member "${name}": known members are ${view.members.map((m) => m.name).join(', ') || 'none'}`);
  return member;
}
