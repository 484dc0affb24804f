/**
 * One side of the upgrade (the old or the new cluster): its member file,
 * store keys, and connections to its current primary as relevo's agent role.
 */
import pg from 'pg';
import { clusterKeys, type ClusterKeys } from '../cluster/keys.js';
import { readCluster } from '../cluster/view.js';
import type { MemberConfig } from '../config/member.js';
import { loadCredentials, ROLE_NAMES } from '../config/secrets.js';
import { splitHostPort } from '../postgres/conf.js';
import type { Store } from '../store/store.js';
import { pgTlsOptions } from '../tls/client.js';
import { clusterCaFile } from '../tls/member.js';
import { UpgradeError, type UpgradeErrorCode } from './errors.js';

export interface Side {
  cluster: string;
  config: MemberConfig;
  keys: ClusterKeys;
  /** The primary's host and port (as it publishes them), password and CA. */
  host: string;
  port: number;
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
  const credentials = loadCredentials(config);
  if (!credentials) throw new UpgradeError(code, `cluster ${config.cluster}: no credentials in ${config.secrets?.file ?? 'the secrets file'} (run this on a member host of that cluster)`);
  const [host, port] = splitHostPort(leader.connectAddress);
  return { cluster: config.cluster, config, keys, host, port, member: leader.name, password: credentials.agentPassword, caFile: clusterCaFile(config) };
}

/** A connection to the side's primary; the caller ends it. Unreachable → the given refusal code. */
export async function connect(side: Side, database: string, code: UpgradeErrorCode = 'UPGRADE_SOURCE_UNREACHABLE', timeoutMs = 10_000): Promise<pg.Client> {
  const client = new pg.Client({
    host: side.host,
    port: side.port,
    user: ROLE_NAMES.agent,
    password: side.password,
    database,
    connectionTimeoutMillis: timeoutMs,
    application_name: 'relevo-upgrade',
    ...pgTlsOptions(side.caFile),
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    const e = error as Error & { code?: string };
    if (e.code === '3D000') throw new UpgradeError('UPGRADE_UNKNOWN_DATABASE', `database "${database}" does not exist on cluster ${side.cluster}`);
    throw new UpgradeError(code, `cannot connect to cluster ${side.cluster} (${side.member} at ${side.host}:${side.port}): ${e.message}`);
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

/** libpq connection string for the side's primary (no password: a passfile supplies it). */
export function conninfo(side: Side, database: string, extra: Record<string, string> = {}): string {
  const quote = (v: string) => `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  const params: Record<string, string> = {
    host: side.host,
    port: String(side.port),
    dbname: database,
    user: ROLE_NAMES.agent,
    ...(side.caFile ? { sslmode: 'verify-full', sslrootcert: side.caFile } : {}),
    ...extra,
  };
  return Object.entries(params)
    .map(([k, v]) => `${k}=${quote(v)}`)
    .join(' ');
}
