import type { ClusterKeys } from '../cluster/keys.js';
import { ClusterSettingsSchema, defaultClusterSettings, type ClusterSettings } from '../cluster/settings.js';
import { InitRecordSchema, LeaderRecordSchema, MemberStatusSchema, SlotRegistrySchema, type MemberStatus } from '../cluster/types.js';
import type { Credentials } from '../config/secrets.js';
import { dataDirState, isStandbyConfigured, readControlData, runningPostmasterPid } from '../postgres/datadir.js';
import { inspectServer } from '../postgres/inspect.js';
import { agentSqlTarget, type LocalPostgres } from '../postgres/local.js';
import { withConnection } from '../postgres/sql.js';
import type { KeyValue, Store } from '../store/store.js';
import type { LocalServer, StoreView } from './observation.js';

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
  return { view: { reachable: true, init, leader, members, slotRegistry }, settings };
}

export async function observeServer(local: LocalPostgres, credentials: Credentials | undefined): Promise<LocalServer> {
  const postmasterPid = runningPostmasterPid(local.dataDir);
  if (postmasterPid === undefined) return { kind: 'stopped' };
  if (!credentials) return { kind: 'unreachable', postmasterPid, error: 'no agent credentials to connect with' };
  try {
    const inspection = await withConnection(agentSqlTarget(local, credentials), inspectServer, 3_000);
    return { kind: 'running', postmasterPid, inspection };
  } catch (error) {
    return { kind: 'unreachable', postmasterPid, error: (error as Error).message };
  }
}

export interface DataDirFacts {
  dataDir: 'empty' | 'initialized';
  systemIdentifier: string | undefined;
  standbyConfigured: boolean;
}

export async function observeDataDir(local: LocalPostgres, cachedSystemIdentifier: string | undefined): Promise<DataDirFacts> {
  const state = dataDirState(local.dataDir);
  if (state === 'empty') return { dataDir: state, systemIdentifier: undefined, standbyConfigured: false };
  // The system identifier never changes for a data directory; read pg_control once.
  const systemIdentifier = cachedSystemIdentifier ?? (await readControlData(local.binDir, local.user, local.dataDir).catch(() => undefined))?.systemIdentifier;
  return { dataDir: state, systemIdentifier, standbyConfigured: isStandbyConfigured(local.dataDir) };
}
