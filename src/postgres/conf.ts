import { lstatSync } from 'node:fs';
import type { ManagedParameter } from '../cluster/parameters.js';
import type { ClusterSettings } from '../cluster/settings.js';
import type { MemberConfig } from '../config/member.js';
import { ROLE_NAMES } from '../config/secrets.js';
import type { OsUser } from '../util/os-user.js';
import { OwnedDir, withOwnedDir, writeOwnedFile } from './owned-fs.js';
import { libpqTlsParams } from '../tls/client.js';
import { memberTlsFiles } from '../tls/member.js';
import { pgpassField } from './libpq.js';

/** relevo writes its settings to this file and includes it from postgresql.conf. */
export const RELEVO_CONF = 'relevo.conf';
const INCLUDE_LINE = `include_if_exists = '${RELEVO_CONF}'\t# managed by relevo`;

type ParameterValue = string | number | boolean;

/**
 * Settings relevo starts from; operators may override them with cluster
 * (`postgresql.*`) or member (`postgres.parameters`) parameters.
 */
export function defaultParameters(): Record<string, ParameterValue> {
  return {
    wal_level: 'replica',
    max_wal_senders: 10,
    max_replication_slots: 10,
    hot_standby_feedback: 'on',
    wal_keep_size: '128MB',
    wal_receiver_status_interval: '1s',
    // A standby re-pointed at a new primary retries quickly instead of every 5 s: right after a
    // failover, the new primary's commits wait for the first standby to connect.
    wal_retrieve_retry_interval: '250ms',
    // A standby that stopped reading must not hold a clean shutdown (switchover) for a minute.
    wal_sender_timeout: '10s',
    shared_buffers: '128MB',
    max_connections: 100,
    logging_collector: 'off',
    log_line_prefix: '%m [%p] %q%u@%d ',
    log_checkpoints: 'on',
  };
}

/** Settings relevo owns: no parameter overrides them (src/cluster/parameters.ts refuses them at validation). */
function managedParameters(config: MemberConfig): Partial<Record<ManagedParameter, ParameterValue>> {
  return {
    listen_addresses: config.postgres.listen,
    port: config.postgres.port,
    unix_socket_directories: socketDirOf(config),
    hot_standby: 'on',
    wal_log_hints: 'on',
    password_encryption: 'scram-sha-256',
    cluster_name: `${config.cluster}/${config.name}`,
  };
}

/** What relevo.conf sets, standby settings aside. */
export function baseParameters(config: MemberConfig, settings: ClusterSettings): Record<string, ParameterValue> {
  return { ...defaultParameters(), ...settings.postgresql, ...config.postgres.parameters, ...managedParameters(config), ...tlsParameters(config) };
}

/** ssl=on with the member's certificate; the CA file lets clients authenticate by certificate too. */
function tlsParameters(config: MemberConfig): Record<string, ParameterValue> {
  const files = memberTlsFiles(config);
  if (!files) return {};
  return { ssl: 'on', ssl_cert_file: files.cert, ssl_key_file: files.key, ssl_ca_file: files.caCert, ssl_min_protocol_version: 'TLSv1.2' };
}

export function socketDirOf(config: MemberConfig): string {
  return config.postgres.socketDir ?? '/var/run/postgresql';
}

function quote(value: ParameterValue): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

export interface StandbySettings {
  /** host:port of the member to stream from, and our slot there; absent while no primary is known. */
  upstream: { address: string; slot: string } | undefined;
  passfile: string;
  /** The member's copy of the cluster CA: replication verifies the upstream's certificate (verify-full). */
  sslRootCert?: string;
  /** Fed from the WAL archive (restore_command) only: no primary_conninfo, no slot. */
  archiveFed?: boolean;
  /** A file in the data directory included last (a delayed replica's recovery target, docs/undo.md). */
  includeFile?: string;
}

export function renderRelevoConf(parameters: Record<string, ParameterValue>, standby?: StandbySettings, applicationName?: string): string {
  const lines = ['# Managed by relevo: edits here are overwritten. Use `relevo config set postgresql.<name>=<value>`.'];
  for (const [name, value] of Object.entries(parameters)) lines.push(`${name} = ${quote(value)}`);
  if (standby) lines.push(`recovery_target_timeline = 'latest'`);
  if (standby?.upstream && !standby.archiveFed) {
    const [host, port] = splitHostPort(standby.upstream.address);
    // The password lives in the 0600 passfile, never in this file.
    const conninfo = `host=${host} port=${port} user=${ROLE_NAMES.replication} passfile=${standby.passfile} application_name=${applicationName ?? ''} ${libpqTlsParams(standby.sslRootCert)}`;
    lines.push(`primary_conninfo = ${quote(conninfo)}`);
    lines.push(`primary_slot_name = ${quote(standby.upstream.slot)}`);
  }
  if (standby?.includeFile) lines.push(`include_if_exists = ${quote(standby.includeFile)}`);
  return `${lines.join('\n')}\n`;
}

export function splitHostPort(address: string): [string, number] {
  const index = address.lastIndexOf(':');
  return [address.slice(0, index).replace(/^\[|\]$/g, ''), Number(address.slice(index + 1))];
}

/**
 * pg_hba rules: scram-sha-256 for every network connection, never trust.
 * The bootstrap superuser is reachable only through the local socket as the OS user (peer).
 */
export function renderHba(settings: ClusterSettings, requireTls = false): string {
  // With TLS on, network rules are hostssl: a client without TLS matches no line and is refused.
  const host = requireTls ? 'hostssl' : 'host   ';
  const lines = [
    `# Managed by relevo: network access always uses scram-sha-256${requireTls ? ' over TLS' : ''}.`,
    '# TYPE  DATABASE     USER        ADDRESS        METHOD',
    `local   all          ${ROLE_NAMES.superuser}                  peer`,
    `local   all          ${ROLE_NAMES.agent}                    scram-sha-256`,
    `local   replication  ${ROLE_NAMES.replication}                scram-sha-256`,
    // The agent's superuser role never logs in over the network; relevo uses ${ROLE_NAMES.network} there.
    `host    all          ${ROLE_NAMES.agent}      all            reject`,
    `host    all          ${ROLE_NAMES.superuser}    all            reject`,
  ];
  for (const network of settings.allowedNetworks) {
    lines.push(`${host} replication  ${ROLE_NAMES.replication}  ${network}  scram-sha-256`);
    lines.push(`${host} all          all         ${network}  scram-sha-256`);
  }
  return `${lines.join('\n')}\n`;
}

/** Makes postgresql.conf include relevo.conf (once). */
function ensureInclude(dir: OwnedDir): void {
  const text = dir.read('postgresql.conf') ?? '';
  if (!text.includes(INCLUDE_LINE)) dir.write('postgresql.conf', `${text}\n${INCLUDE_LINE}\n`);
}

/**
 * What the data directory's configuration looked like after the last check of each data directory:
 * the wanted content, and the directory's and files' identity, size and change time. The agent checks
 * its configuration every loop; when neither the wanted content nor any of these changed since a check
 * found (or made) it right, the files are not opened and read again (the default postgresql.conf alone
 * is ~30 kB). Any change to a file - an edit, a replacement, a link put in its place - changes its
 * inode, size or ctime, and the full check runs.
 */
const lastChecked = new Map<string, { wanted: string; stamp: string }>();

function stampOf(dataDir: string): string {
  return [dataDir, ...['postgresql.conf', RELEVO_CONF, 'pg_hba.conf', 'standby.signal'].map((f) => `${dataDir}/${f}`)]
    .map((path) => {
      try {
        const s = lstatSync(path, { bigint: true });
        return `${s.ino}:${s.mode}:${s.uid}:${s.size}:${s.ctimeNs}:${s.mtimeNs}`;
      } catch {
        return '-';
      }
    })
    .join(' ');
}

/**
 * Writes relevo.conf, pg_hba.conf and the standby signal to match the member's
 * role, through the checked data directory (src/postgres/owned-fs.ts: no link
 * is followed, nothing is written as root). Returns true when anything changed.
 */
export function writeMemberConfiguration(
  dataDir: string,
  user: OsUser,
  parameters: Record<string, ParameterValue>,
  settings: ClusterSettings,
  memberName: string,
  standby?: StandbySettings,
): boolean {
  const wanted = new Map<string, string>([
    [RELEVO_CONF, renderRelevoConf(parameters, standby, memberName)],
    ['pg_hba.conf', renderHba(settings, parameters.ssl === 'on')],
  ]);
  const wantedKey = JSON.stringify([...wanted, standby !== undefined, user.uid]);
  // Taken before the check: a change made during or after it (ours included) shows as a new stamp next time.
  const stamp = stampOf(dataDir);
  const last = lastChecked.get(dataDir);
  if (last?.wanted === wantedKey && last.stamp === stamp) return false;
  lastChecked.delete(dataDir);
  const changed = withOwnedDir(dataDir, user, (dir) => {
    ensureInclude(dir);
    let changed = false;
    for (const [name, content] of wanted) {
      if (dir.read(name) === content) continue;
      dir.write(name, content);
      changed = true;
    }
    const signal = 'standby.signal';
    if (standby && !dir.exists(signal)) {
      dir.write(signal, '');
      changed = true;
    }
    if (!standby && dir.remove(signal)) changed = true;
    return changed;
  });
  // Remembered only when the check found everything right: after a write the next call checks again.
  if (!changed) lastChecked.set(dataDir, { wanted: wantedKey, stamp });
  return changed;
}

/**
 * The libpq password file the member's PostgreSQL programs use (mode 0600,
 * owned by the OS user): replication for the walreceiver and pg_basebackup,
 * the network role for pg_rewind (it has the agent role's password).
 */
export function writePassfile(path: string, user: OsUser, credentials: { replicationPassword: string; agentPassword: string }): void {
  writeOwnedFile(
    path,
    `*:*:*:${ROLE_NAMES.replication}:${pgpassField(credentials.replicationPassword)}\n*:*:*:${ROLE_NAMES.agent}:${pgpassField(credentials.agentPassword)}\n*:*:*:${ROLE_NAMES.network}:${pgpassField(credentials.agentPassword)}\n`,
    user,
  );
}

/**
 * Settings relevo itself may have put in postgresql.auto.conf (fencing a
 * former primary over SQL): removed before the server starts under relevo's
 * management again, since auto.conf overrides relevo.conf.
 */
const FENCE_SETTINGS = ['synchronous_standby_names', 'default_transaction_read_only'];

export function clearFenceSettings(dataDir: string, user: OsUser): boolean {
  return withOwnedDir(dataDir, user, (dir) => {
    const text = dir.read('postgresql.auto.conf');
    if (text === undefined) return false;
    const lines = text.split('\n');
    const kept = lines.filter((line) => !FENCE_SETTINGS.some((name) => line.trim().startsWith(name)));
    if (kept.length === lines.length) return false;
    dir.write('postgresql.auto.conf', kept.join('\n'));
    return true;
  });
}
