/**
 * One side of the upgrade (the old or the new cluster): its member file,
 * store keys, and its current primary's agent. relevo's superuser logs in
 * only through a primary's local socket (pg_hba rejects it over TCP), so the
 * command never connects to PostgreSQL itself: every step that needs the
 * superuser is a named operation (operations.ts) that the primary's agent
 * runs, asked over its authenticated REST API like `relevo restart`. The
 * member file given may be any member's: the command works from any host
 * that reaches both primaries' APIs and the store.
 */
import { clusterKeys, type ClusterKeys } from '../cluster/keys.js';
import { readCluster } from '../cluster/view.js';
import type { MemberConfig } from '../config/member.js';
import { splitHostPort } from '../postgres/conf.js';
import type { Store } from '../store/store.js';
import { agentApiCall } from '../cli/agent-api.js';
import { clusterCaPem } from '../tls/member.js';
import { UpgradeError, UPGRADE_ERRORS, type UpgradeErrorCode } from './errors.js';
import type { OperationParams, OperationResult, UpgradeOperation } from './operations.js';

export interface Side {
  cluster: string;
  config: MemberConfig;
  keys: ClusterKeys;
  /** The primary's host and port (as it publishes them: what the subscription connects to). */
  host: string;
  port: number;
  member: string;
  /** The primary agent's REST API. */
  apiUrl: string;
  /** The cluster CA (PEM), sent to the new primary for the subscription's verify-full; undefined without TLS. */
  caPem: string | undefined;
  /** Refusal code when this side's primary cannot be reached. */
  unreachable: UpgradeErrorCode;
}

/** Finds the cluster's primary from the store; refuses with `code` when there is none. */
export async function locate(store: Store, config: MemberConfig, code: UpgradeErrorCode): Promise<Side> {
  const keys = clusterKeys(config.cluster);
  const { view } = await readCluster(store, keys);
  if (!view.reachable) throw new UpgradeError(code, `cluster ${config.cluster}: the store is unreadable (${view.error})`);
  const leader = view.leader && view.members.find((m) => m.name === view.leader!.member);
  if (!leader || leader.role !== 'primary') throw new UpgradeError(code, `cluster ${config.cluster} has no primary${view.leader ? ` (${view.leader.member} holds the lease but is ${leader?.role ?? 'unpublished'})` : ''}`);
  // Credentials go only to a server that proves it holds a certificate from the cluster CA.
  if (config.tls.enabled && !leader.apiUrl.startsWith('https:')) {
    throw new UpgradeError('UPGRADE_API_REFUSED', `the agent of ${leader.name} publishes a plain-HTTP API (${leader.apiUrl}) while TLS is on in ${config.name}'s member file: refusing to send credentials`);
  }
  const [host, port] = splitHostPort(leader.connectAddress);
  return { cluster: config.cluster, config, keys, host, port, member: leader.name, apiUrl: leader.apiUrl, caPem: clusterCaPem(config), unreachable: code };
}

/** How long one operation may take before the CLI gives up on the answer (the agent's own waits are bounded by their parameters). */
const LONG_OPERATIONS: Partial<Record<UpgradeOperation, number>> = { 'dump-roles': 1_800_000, 'dump-schema': 1_800_000, 'restore-roles': 1_800_000, 'restore-schema': 1_800_000, 'row-counts': 1_800_000, analyze: 3_600_000, 'create-database': 600_000, 'prepare-database': 600_000, subscribe: 600_000 };

/**
 * Asks the side's primary agent to run operation `op`. Errors come back as
 * values with the upgrade's codes; an agent that cannot be reached is the
 * side's unreachable code, one that refuses the credentials UPGRADE_API_REFUSED.
 */
export async function call<N extends UpgradeOperation>(side: Side, op: N, params: OperationParams<N>, extraTimeoutMs = 0): Promise<OperationResult<N>> {
  const url = `${side.apiUrl}/upgrade/${op}`;
  const timeoutMs = (LONG_OPERATIONS[op] ?? 60_000) + extraTimeoutMs;
  const response = await agentApiCall(side.config, url, { method: 'POST', body: JSON.stringify(params), timeoutMs, maxBodyBytes: 256 * 1024 * 1024 }).catch((error: Error) => {
    throw new UpgradeError(side.unreachable, `cannot reach the agent of ${side.member} (primary of ${side.cluster}) at ${side.apiUrl}: ${error.message}`);
  });
  let body: { code?: string; error?: string; message?: string } & Record<string, unknown> = {};
  try {
    body = JSON.parse(response.body) as typeof body;
  } catch {
    // Not JSON: reported with the status below.
  }
  if (response.status >= 200 && response.status < 300) return body as OperationResult<N>;
  const what = `${op} on ${side.member} (primary of ${side.cluster})`;
  const detail = body.message ?? body.error ?? `HTTP ${response.status}`;
  if (typeof body.code === 'string' && body.code in UPGRADE_ERRORS) throw new UpgradeError(body.code as UpgradeErrorCode, `${what}: ${detail.replace(/ \[UPGRADE_[A-Z_]+\]$/, '')}`);
  if (response.status === 401 || response.status === 403) {
    throw new UpgradeError('UPGRADE_API_REFUSED', `${what}: the agent refused the request (${body.code ?? response.status}: ${detail}); set api.auth in ${side.config.name}'s member file (the cluster's API credentials)`);
  }
  if (response.status === 404 || response.status === 400) throw new UpgradeError('UPGRADE_API_REFUSED', `${what}: ${detail} (is the agent running the same relevo version?)`);
  if (response.status === 503 && body.code === 'API_NOT_READY') throw new UpgradeError(side.unreachable, `${what}: ${detail}`);
  throw new UpgradeError('UPGRADE_OPERATION_FAILED', `${what}: ${detail}`);
}
