import { chownSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { clusterKeys } from '../cluster/keys.js';
import { ClusterSettingsSchema, defaultClusterSettings } from '../cluster/settings.js';
import { InitRecordSchema, LeaderRecordSchema, MemberStatusSchema, type MemberStatus } from '../cluster/types.js';
import type { MemberConfig } from '../config/member.js';
import { loadCredentials } from '../config/secrets.js';
import type { Store } from '../store/store.js';
import { lookupOsUser, runningAsRoot, type OsUser } from '../util/os-user.js';
import { openClusterRepository } from './catalog.js';
import type { BackupContext } from './context.js';
import { memberTlsFiles } from '../tls/member.js';
import { parseRecord } from '../cluster/records.js';
import { BackupError } from './errors.js';
import { socketDirOf } from '../postgres/conf.js';
import { clusterDirName } from './layout.js';
import { REPOSITORY_FORMAT, REPOSITORY_MARKER } from './repository.js';

/**
 * Gathers a BackupContext from the store: members, leader, system identifier,
 * settings; `repository` overrides the configured location (restoring from a
 * copy elsewhere).
 */
export async function openBackupContext(config: MemberConfig, store: Store, note: (line: string) => void, repository?: string): Promise<BackupContext> {
  const keys = clusterKeys(config.cluster);
  const [initKv, leaderKv, configKv, memberKvs] = await Promise.all([store.get(keys.initialize), store.get(keys.leader), store.get(keys.config), store.list(keys.membersPrefix)]);
  const systemIdentifier = initKv ? InitRecordSchema.parse(JSON.parse(initKv.value)).systemIdentifier : undefined;
  if (!systemIdentifier) throw new BackupError('NO_SOURCE', `cluster ${config.cluster} is not initialised yet (no system identifier in the store)`);
  const settings = configKv ? ClusterSettingsSchema.parse(JSON.parse(configKv.value)) : defaultClusterSettings();
  const location = repository ?? settings.backup.repository;
  if (!location) throw new BackupError('BACKUP_NOT_CONFIGURED', `cluster ${config.cluster} has no backup repository`);
  // An unreadable member record (see `relevo store repair`) leaves that member out: never a source.
  const members: MemberStatus[] = memberKvs.flatMap((kv) => {
    const parsed = parseRecord(MemberStatusSchema, kv.value);
    return parsed.ok ? [parsed.value] : [];
  });
  const credentials = loadCredentials(config);
  if (!credentials) throw new BackupError('NO_SOURCE', `no credentials in ${config.secrets.file}: the backup commands connect as the agent and replication roles`);
  const osUser = lookupOsUser(config.postgres.osUser);
  return {
    cluster: config.cluster,
    systemIdentifier,
    settings: { ...settings.backup, repository: location },
    repository: openClusterRepository(location, config.cluster, systemIdentifier, osUser),
    credentials,
    binDir: config.postgres.binDir,
    osUser,
    ...(memberTlsFiles(config) ? { tlsCaFile: memberTlsFiles(config)!.caCert } : {}),
    members,
    leader: leaderKv ? LeaderRecordSchema.parse(JSON.parse(leaderKv.value)).member : null,
    local: { member: config.name, dataDir: config.postgres.dataDir.replace(/\/+$/, ''), socketDir: socketDirOf(config), port: config.postgres.port },
    note,
  };
}

/**
 * `relevo backup init`: marks a directory as a relevo repository and creates
 * this cluster's directory, owned by the PostgreSQL OS user (archive_command
 * runs as that user). The marker keeps archive_command from writing into an
 * empty mount point when the remote filesystem is not mounted.
 */
export function initRepository(location: string, cluster: string, systemIdentifier: string | undefined, user: OsUser): string {
  if (!existsSync(location)) throw new BackupError('REPOSITORY_UNREACHABLE', `${location} does not exist: create it (or mount the remote filesystem) first`);
  const dir = systemIdentifier === undefined ? undefined : clusterDirName(cluster, systemIdentifier);
  const others = readdirSync(location).filter((name) => name.startsWith(`${cluster}-`) && name !== dir);
  if (others.length > 0) {
    throw new BackupError('REPOSITORY_OTHER_CLUSTER', `${location} already holds ${others.join(', ')}: a cluster named ${cluster} with another system identifier; use another repository or remove it deliberately`);
  }
  const own = (path: string) => {
    if (runningAsRoot()) chownSync(path, user.uid, user.gid);
  };
  const marker = join(location, REPOSITORY_MARKER);
  if (!existsSync(marker)) {
    writeFileSync(marker, `${JSON.stringify({ format: REPOSITORY_FORMAT, createdAt: new Date().toISOString() })}\n`, { mode: 0o644 });
  }
  own(location);
  // Before the cluster exists only the marker: archive_command creates the cluster's directory with its first segment.
  if (dir === undefined) return location;
  for (const sub of ['', 'wal', 'wal/other', 'backups', 'restore-points', 'conflicts', 'log']) {
    const path = join(location, dir, sub);
    mkdirSync(path, { recursive: true, mode: 0o750 });
    own(path);
  }
  return join(location, dir);
}

export { lookupOsUser };
