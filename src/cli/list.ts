import { readCluster } from '../agent/observe.js';
import type { MemberStatus } from '../cluster/types.js';
import { CliError, EXIT, type ClusterHandle } from './context.js';
import { formatBytes, renderTable } from './table.js';

export interface ClusterListing {
  cluster: string;
  leader: string | null;
  systemIdentifier: string | null;
  members: MemberStatus[];
}

export async function clusterListing(handle: ClusterHandle): Promise<ClusterListing> {
  const { view } = await readCluster(handle.store, handle.keys);
  if (!view.reachable) throw new CliError(view.error, EXIT.failure);
  return {
    cluster: handle.config.cluster,
    leader: view.leader?.member ?? null,
    systemIdentifier: view.init?.systemIdentifier ?? null,
    members: [...view.members].sort((a, b) => a.name.localeCompare(b.name)),
  };
}

export function renderListing(listing: ClusterListing): string {
  const rows = listing.members.map((m) => [
    m.name,
    m.connectAddress,
    m.name === listing.leader ? `${m.role} (leader)` : m.role,
    m.state,
    m.timeline === null ? '-' : String(m.timeline),
    m.receivedLsn ?? '-',
    m.replayedLsn ?? '-',
    formatBytes(m.lagBytes),
    m.lagSeconds === null ? '-' : m.lagSeconds.toFixed(1),
    m.role === 'primary' ? m.slots.map((s) => `${s.name}${s.active ? '' : '(inactive)'}`).join(',') || '-' : m.streaming ? 'streaming' : m.replayPaused ? 'paused' : '-',
  ]);
  const header = `Cluster ${listing.cluster} (system ${listing.systemIdentifier ?? 'not initialised'}), leader: ${listing.leader ?? 'none'}`;
  return `${header}\n${renderTable(['Member', 'Address', 'Role', 'State', 'TL', 'Received', 'Replayed', 'Lag', 'Lag s', 'Slots / stream'], rows)}`;
}
