/**
 * One side of the upgrade (the old or the new cluster): its member file,
 * store keys, and connections to its current primary as relevo's agent role.
 * That role is a superuser that logs in only through the local socket
 * (pg_hba rejects it over TCP), so the primary must be the member of the file
 * given, on this host: otherwise UPGRADE_NOT_LOCAL, before anything is written.
 */
import pg from 'pg';
import { clusterKeys, type ClusterKeys } from '../cluster/keys.js';
import { readCluster } from '../cluster/view.js';
import type { MemberConfig } from '../config/member.js';
import { loadCredentials, ROLE_NAMES } from '../config/secrets.js';
import { socketDirOf, splitHostPort } from '../postgres/conf.js';
import type { Store } from '../store/store.js';
import { clusterCaFile } from '../tls/member.js';
import { UpgradeError, type UpgradeErrorCode } from './errors.js';
import { conninfoValue } from '../postgres/libpq.js';

export interface Side {
  cluster: string;
  config: MemberConfig;
  keys: ClusterKeys;
  /** The primary's host and port (as it publishes them: what the subscription connects to), and CA. */
  host: string;
  port: number;
  /** Its Unix socket directory and port on this host: relevo's own connections. */
  socketDir: string;
  localPort: number;
  member: string;
  password: string;
  caFile: string | undefined;
}

/** Finds the cluster's primary from the store; refuses with `code` when there is none or its credentials are missing. */
export async function locate(store: Store, config: MemberConfig, code: UpgradeErrorCode): Promise<Side> {
  const keys = clusterKeys(config.cluster);
  const { view } = await readCluster(store, keys);
  if (!view.reachable) throw new UpgradeError(code, `cluster ${config.cluster}: the store is unreadable (${view.error})`);
  const leader = view.leader && view.members.find((m) => m.name === view.leader!.member);
  if (!leader || leader.role !== 'primary') throw new UpgradeError(code, `cluster ${config.cluster} has no primary${view.leader ? ` (${view.leader.member} holds the lease but is ${leader?.role ?? 'unpublished'})` : ''}`);
  if (leader.name !== config.name) {
    throw new UpgradeError(
      'UPGRADE_NOT_LOCAL',
      `the primary of cluster ${config.cluster} is ${leader.name}, not ${config.name} (the member file given): relevo connects as its superuser only through the primary's local socket, so run this on ${leader.name}'s host with its member file, or move the primary with 'relevo switchover'`,
    );
  }
  const credentials = loadCredentials(config);
  if (!credentials) throw new UpgradeError(code, `cluster ${config.cluster}: no credentials in ${config.secrets?.file ?? 'the secrets file'} (run this on a member host of that cluster)`);
  const [host, port] = splitHostPort(leader.connectAddress);
  return { cluster: config.cluster, config, keys, host, port, socketDir: socketDirOf(config), localPort: config.postgres.port, member: leader.name, password: credentials.agentPassword, caFile: clusterCaFile(config) };
}

/** A superuser connection to the side's primary through its local socket; the caller ends it. Unreachable → the given refusal code. */
export async function connect(side: Side, database: string, code: UpgradeErrorCode = 'UPGRADE_SOURCE_UNREACHABLE', timeoutMs = 10_000): Promise<pg.Client> {
  const client = new pg.Client({
    host: side.socketDir,
    port: side.localPort,
    user: ROLE_NAMES.agent,
    password: side.password,
    database,
    connectionTimeoutMillis: timeoutMs,
    application_name: 'relevo-upgrade',
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    const e = error as Error & { code?: string };
    if (e.code === '3D000') throw new UpgradeError('UPGRADE_UNKNOWN_DATABASE', `database "${database}" does not exist on cluster ${side.cluster}`);
    throw new UpgradeError(code, `cannot connect to cluster ${side.cluster} (${side.member} through ${side.socketDir}, port ${side.localPort}): ${e.message}`);
  }
  return client;
}

export async function withClient<T>(side: Side, database: string, work: (client: pg.Client) => Promise<T>, code?: UpgradeErrorCode): Promise<T> {
  const client = await connect(side, database, code);
  try {
    return await work(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

function render(params: Record<string, string>): string {
  return Object.entries(params)
    .map(([k, v]) => `${k}=${conninfoValue(v)}`)
    .join(' ');
}

/** libpq connection string for relevo's superuser through the side's local socket (no password: a passfile supplies it). */
export function localConninfo(side: Side, database: string): string {
  return render({ host: side.socketDir, port: String(side.localPort), dbname: database, user: ROLE_NAMES.agent });
}

/**
 * libpq connection string over the network to the side's primary as `user`
 * (the subscription's: the upgrade role, never the superuser), with TLS
 * verify-full when the cluster has a CA. No password: a passfile supplies it.
 */
export function networkConninfo(side: Side, database: string, user: string, extra: Record<string, string> = {}): string {
  return render({
    host: side.host,
    port: String(side.port),
    dbname: database,
    user,
    ...(side.caFile ? { sslmode: 'verify-full', sslrootcert: side.caFile } : {}),
    ...extra,
  });
}
