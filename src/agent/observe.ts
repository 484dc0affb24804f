import type { ClusterKeys } from '../cluster/keys.js';
import { ClusterSettingsSchema, defaultClusterSettings, type ClusterSettings } from '../cluster/settings.js';
import {
  FailoverRequestSchema,
  HistorySchema,
  InitRecordSchema,
  LeaderRecordSchema,
  MemberStatusSchema,
  OptimeSchema,
  SlotRegistrySchema,
  SyncRecordSchema,
  type MemberStatus,
} from '../cluster/types.js';
import type { Credentials } from '../config/secrets.js';
import { dataDirState, isStandbyConfigured, isUpstreamConfigured, newestHistoryTimeline, readControlData, runningPostmasterPid, type ControlData } from '../postgres/datadir.js';
import { inspectServer } from '../postgres/inspect.js';
import type { LocalPostgres } from '../postgres/local.js';
import type { KeptConnection } from '../postgres/sql.js';
import type { KeyValue, Store } from '../store/store.js';
import type { LocalServer, PeerView, StoreView } from './observation.js';
import { apiCall, type ApiClientTls } from '../tls/client.js';

function parseJson(kv: KeyValue | undefined): unknown {
  return kv ? JSON.parse(kv.value) : undefined;
}

export interface ClusterRead {
  view: StoreView;
  settings: ClusterSettings;
}

/** Reads the whole cluster subtree in one round trip. */
export async function readCluster(store: Store, keys: ClusterKeys): Promise<ClusterRead> {
  let entries: KeyValue[];
  try {
    entries = await store.list(keys.root);
  } catch (error) {
    return { view: { reachable: false, error: (error as Error).message }, settings: defaultClusterSettings() };
  }
  const byKey = new Map(entries.map((e) => [e.key, e]));
  const members: MemberStatus[] = [];
  for (const entry of entries) {
    if (!entry.key.startsWith(keys.membersPrefix)) continue;
    const parsed = MemberStatusSchema.safeParse(JSON.parse(entry.value));
    if (parsed.success) members.push(parsed.data);
  }
  const leaderKv = byKey.get(keys.leader);
  const leader = leaderKv ? { ...LeaderRecordSchema.parse(parseJson(leaderKv)), revision: leaderKv.revision } : undefined;
  const init = byKey.has(keys.initialize) ? InitRecordSchema.parse(parseJson(byKey.get(keys.initialize))) : undefined;
  const slotRegistry = byKey.has(keys.slots) ? SlotRegistrySchema.parse(parseJson(byKey.get(keys.slots))) : {};
  const settings = byKey.has(keys.config) ? ClusterSettingsSchema.parse(parseJson(byKey.get(keys.config))) : defaultClusterSettings();
  const optional = <T>(key: string, schema: { parse(value: unknown): T }): T | undefined => (byKey.has(key) ? schema.parse(parseJson(byKey.get(key))) : undefined);
  return {
    view: {
      reachable: true,
      init,
      leader,
      members,
      slotRegistry,
      sync: optional(keys.sync, SyncRecordSchema),
      history: optional(keys.history, HistorySchema) ?? [],
      optime: optional(keys.optime, OptimeSchema),
      failover: optional(keys.failover, FailoverRequestSchema),
    },
    settings,
  };
}

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

/** Asks peers for their status directly, in parallel, with a short timeout. */
export async function askPeers(members: MemberStatus[], self: string, timeoutMs: number, tls?: ApiClientTls): Promise<PeerView[]> {
  return Promise.all(
    members
      .filter((m) => m.name !== self)
      .map(async (m): Promise<PeerView> => {
        try {
          // Over HTTPS the peer is verified against the cluster CA, and our member certificate authenticates us.
          const response = await apiCall(`${m.apiUrl}/status`, { timeoutMs, ...(tls ? { tls } : {}) });
          const parsed = MemberStatusSchema.safeParse(JSON.parse(response.body));
          return parsed.success ? { name: m.name, status: parsed.data } : { name: m.name, status: undefined, error: 'malformed status' };
        } catch (error) {
          return { name: m.name, status: undefined, error: (error as Error).message };
        }
      }),
  );
}
