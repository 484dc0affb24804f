import { readCluster } from '../agent/observe.js';
import type { MemberStatus } from '../cluster/types.js';
import { RouterStatusSchema, type RouterStatus } from '../router/status.js';
import { CliError, EXIT, type ClusterHandle } from './context.js';
import { formatBytes, renderTable } from './table.js';
import { TONE_COLOURS, toneOf } from '../agent/state-tones.js';

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
  if (!view.reachable) throw new CliError(view.error, EXIT.failure);
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

/** The State column in the colour of its tone (src/agent/state-tones.ts, shared with the dashboard). */
const colourState = (padded: string, column: number, raw: string) =>
  column === 3 ? `\x1b[${TONE_COLOURS[toneOf(raw)].ansi}m${raw}\x1b[0m${padded.slice(raw.length)}` : padded;

export function renderListing(listing: ClusterListing, options: { colour?: boolean } = {}): string {
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
  const paused = listing.paused ? ' — PAUSED: no automatic failover' : '';
  const header = `Cluster ${listing.cluster} (system ${listing.systemIdentifier ?? 'not initialised'}), leader: ${listing.leader ?? 'none'}${paused}`;
  return `${header}\n${renderTable(['Member', 'Address', 'Role', 'State', 'TL', 'Received', 'Replayed', 'Lag', 'Lag s', 'Slots / stream'], rows, options.colour ? colourState : undefined)}${renderRouters(listing.routers)}`;
}
