import { readCluster } from '../agent/observe.js';
import { apiCredentials, basicAuthHeader } from '../api/auth.js';
import type { MemberStatus } from '../cluster/types.js';
import { RouterStatusSchema, type RouterStatus } from '../router/status.js';
import { CliError, EXIT, type ClusterHandle } from './context.js';
import { formatBytes, renderTable } from './table.js';

export interface ClusterListing {
  cluster: string;
  leader: string | null;
  systemIdentifier: string | null;
  paused: boolean;
  members: MemberStatus[];
  routers: RouterStatus[];
}

export async function clusterListing(handle: ClusterHandle): Promise<ClusterListing> {
  const { view, settings } = await readCluster(handle.store, handle.keys);
  if (!view.reachable) throw new CliError(`store unreachable: ${view.error}${await localMemberSays(handle)}`, EXIT.failure);
  const routers = (await handle.store.list(handle.keys.routersPrefix))
    .map((kv) => RouterStatusSchema.safeParse(JSON.parse(kv.value)))
    .flatMap((parsed) => (parsed.success ? [parsed.data] : []));
  return {
    cluster: handle.config.cluster,
    leader: view.leader?.member ?? null,
    systemIdentifier: view.init?.systemIdentifier ?? null,
    paused: settings.paused,
    members: [...view.members].sort((a, b) => a.name.localeCompare(b.name)),
    routers,
  };
}

/**
 * Without the store, what this member's agent says over its API (e.g. a
 * primary riding out the outage: "failsafe active: …").
 */
async function localMemberSays(handle: ClusterHandle): Promise<string> {
  const credentials = apiCredentials(handle.config);
  try {
    const response = await fetch(`http://${handle.config.api.listen}/status`, {
      headers: credentials ? { authorization: basicAuthHeader(credentials) } : {},
      signal: AbortSignal.timeout(2_000),
    });
    const status = (await response.json()) as Partial<MemberStatus>;
    return `\nmember ${status.name ?? handle.config.name} (its agent's API): ${status.role ?? '?'}, ${status.state ?? '?'} — ${status.reason ?? ''}`;
  } catch (error) {
    return `\nmember ${handle.config.name}'s agent API at ${handle.config.api.listen} does not answer either (${(error as Error).message})`;
  }
}

/** `primary (failsafe)` while a primary rides out a store outage. */
function stateLabel(m: MemberStatus): string {
  return m.reason.startsWith('failsafe active') ? `${m.state} (failsafe)` : m.state;
}

function renderRouters(routers: RouterStatus[]): string {
  if (routers.length === 0) return '';
  const rows = routers.flatMap((r) =>
    r.listeners.map((l) => [
      r.name,
      l.role === 'rw' ? 'read-write' : 'read-only',
      l.address,
      String(l.open),
      Object.entries(l.backends).map(([member, n]) => `${member}:${n}`).join(',') || '-',
      String(l.held),
      String(Object.values(l.refused).reduce((a, b) => a + b, 0)),
      formatBytes(l.bytesFromClients + l.bytesToClients),
    ]),
  );
  return `\n\nRouters\n${renderTable(['Router', 'Listener', 'Address', 'Open', 'Per backend', 'Held', 'Refused', 'Bytes'], rows)}`;
}

export function renderListing(listing: ClusterListing): string {
  const rows = listing.members.map((m) => [
    m.name,
    m.connectAddress,
    m.name === listing.leader ? `${m.role} (leader)` : m.role,
    stateLabel(m),
    m.timeline === null ? '-' : String(m.timeline),
    m.receivedLsn ?? '-',
    m.replayedLsn ?? '-',
    formatBytes(m.lagBytes),
    m.lagSeconds === null ? '-' : m.lagSeconds.toFixed(1),
    m.role === 'primary' ? m.slots.map((s) => `${s.name}${s.active ? '' : '(inactive)'}`).join(',') || '-' : m.streaming ? 'streaming' : m.replayPaused ? 'paused' : '-',
  ]);
  const paused = listing.paused ? ' — PAUSED: no automatic failover' : '';
  const header = `Cluster ${listing.cluster} (system ${listing.systemIdentifier ?? 'not initialised'}), leader: ${listing.leader ?? 'none'}${paused}`;
  return `${header}\n${renderTable(['Member', 'Address', 'Role', 'State', 'TL', 'Received', 'Replayed', 'Lag', 'Lag s', 'Slots / stream'], rows)}${renderRouters(listing.routers)}`;
}
