import { MemberStatusSchema, type MemberStatus } from '../cluster/types.js';
import type { Credentials } from '../config/secrets.js';
import { dataDirState, isStandbyConfigured, isUpstreamConfigured, newestHistoryTimeline, readControlData, runningPostmasterPid, type ControlData } from '../postgres/datadir.js';
import { inspectServer } from '../postgres/inspect.js';
import type { LocalPostgres } from '../postgres/local.js';
import type { KeptConnection } from '../postgres/sql.js';
import type { LocalServer, PeerView } from './observation.js';
import { apiCall, peerRequest, type PeerAccess } from '../tls/client.js';

export { readCluster, type ClusterRead } from '../cluster/view.js';

export async function observeServer(local: LocalPostgres, connection: KeptConnection, credentials: Credentials | undefined): Promise<LocalServer> {
  const postmasterPid = runningPostmasterPid(local.dataDir);
  if (postmasterPid === undefined) {
    connection.close();
    return { kind: 'stopped' };
  }
  if (!credentials) return { kind: 'unreachable', postmasterPid, error: 'no agent credentials to connect with' };
  try {
    const inspection = await connection.use((client) => inspectServer(client, newestHistoryTimeline(local.dataDir)));
    return { kind: 'running', postmasterPid, inspection };
  } catch (error) {
    return { kind: 'unreachable', postmasterPid, error: (error as Error).message };
  }
}

export interface DataDirFacts {
  dataDir: 'empty' | 'initialized';
  systemIdentifier: string | undefined;
  control: ControlData | undefined;
  standbyConfigured: boolean;
  upstreamConfigured: boolean;
}

/**
 * pg_control is read when PostgreSQL is stopped (its timeline and checkpoint
 * matter for rejoining) or when the system identifier is not known yet.
 */
export async function observeDataDir(local: LocalPostgres, cachedSystemIdentifier: string | undefined, serverStopped: boolean): Promise<DataDirFacts> {
  const state = dataDirState(local.dataDir);
  if (state === 'empty') return { dataDir: state, systemIdentifier: undefined, control: undefined, standbyConfigured: false, upstreamConfigured: false };
  const control =
    serverStopped || cachedSystemIdentifier === undefined ? await readControlData(local.binDir, local.user, local.dataDir).catch(() => undefined) : undefined;
  return {
    dataDir: state,
    systemIdentifier: cachedSystemIdentifier ?? control?.systemIdentifier,
    control: serverStopped ? control : undefined,
    standbyConfigured: isStandbyConfigured(local.dataDir),
    upstreamConfigured: isUpstreamConfigured(local.dataDir),
  };
}

/** Asks peers for their status directly, in parallel, with a short timeout (with credentials when configured: api.authReadOnly refuses reads without). */
export async function askPeers(members: MemberStatus[], self: string, timeoutMs: number, access: PeerAccess = {}): Promise<PeerView[]> {
  return Promise.all(
    members
      .filter((m) => m.name !== self)
      .map(async (m): Promise<PeerView> => {
        try {
          // Over HTTPS the peer is verified against the cluster CA, and our member certificate authenticates us.
          const response = await apiCall(`${m.apiUrl}/status`, { timeoutMs, ...peerRequest(access) });
          if (response.status !== 200) return { name: m.name, status: undefined, error: `HTTP ${response.status} from ${m.apiUrl}/status` };
          const parsed = MemberStatusSchema.safeParse(JSON.parse(response.body));
          return parsed.success ? { name: m.name, status: parsed.data } : { name: m.name, status: undefined, error: 'malformed status' };
        } catch (error) {
          return { name: m.name, status: undefined, error: (error as Error).message };
        }
      }),
  );
}
