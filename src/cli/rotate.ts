/**
 * `relevo secrets rotate` and `relevo certs rotate`: change credentials and
 * certificates on a running cluster without a failover or a dropped session.
 */
import { existsSync, readFileSync } from 'node:fs';
import { readCluster } from '../cluster/view.js';
import { rotationGeneration } from '../agent/upkeep.js';
import { generatePassword, loadCredentials, ROLE_NAMES, writeCredentialsFile, type Credentials } from '../config/secrets.js';
import { splitHostPort } from '../postgres/conf.js';
import { scramVerifier } from '../postgres/scram.js';
import { quoteIdent, quoteLiteral, withConnection } from '../postgres/sql.js';
import { serverFingerprint } from '../tls/client.js';
import { writeFileSafely } from '../tls/files.js';
import { hostOf } from '../tls/pki.js';
import { clusterCaFile } from '../tls/member.js';
import { CliError, EXIT, type ClusterHandle } from './context.js';

import type { SecretRole } from './secret-roles.js';

/**
 * New passwords for the chosen roles. Order: the new SCRAM verifier goes to
 * the primary (and through WAL to every standby) in one transaction, over a
 * verified TLS connection with the current password; then the secrets file is
 * replaced atomically. Each agent notices the changed file within a loop,
 * rewrites its passfile and uses the new password for new connections;
 * established sessions (streaming replication, the agents' own) keep going.
 */
export async function rotateSecrets(handle: ClusterHandle, role: SecretRole): Promise<string> {
  const { config } = handle;
  const roles: string[] = role === 'all' ? ['replication', 'agent', 'api'] : [role];
  const dbRoles = (roles as readonly string[]).filter((r) => r !== 'api') as ('replication' | 'agent')[];
  for (const r of dbRoles) {
    const source = r === 'replication' ? config.secrets.replicationPassword : config.secrets.agentPassword;
    if (source) throw new CliError('SECRET_MANAGED_ELSEWHERE', `the ${r} password comes from secrets.${r}Password (${'env' in source ? `$${source.env}` : source.file}): change it there and in PostgreSQL yourself, or remove that setting to let relevo manage it`);
  }
  const lines: string[] = [];
  if (dbRoles.length > 0) {
    const current = loadCredentials(config);
    if (!current) throw new CliError('NOT_BOOTSTRAPPED', `no credentials in ${config.secrets.file}: the cluster is not bootstrapped yet`);
    const { view } = await readCluster(handle.store, handle.keys);
    if (!view.reachable) throw new CliError('STORE_UNREACHABLE', view.error);
    const leader = view.leader && view.members.find((m) => m.name === view.leader!.member);
    if (!leader) throw new CliError('NO_PRIMARY', 'no primary holds the leader lease now: rotate once the cluster has one', EXIT.failure);
    const next: Credentials = { ...current };
    if (dbRoles.includes('replication')) next.replicationPassword = generatePassword();
    if (dbRoles.includes('agent')) next.agentPassword = generatePassword();
    const [host, port] = splitHostPort(leader.connectAddress);
    const caFile = clusterCaFile(config);
    const target = (password: string) => ({ host, port, user: ROLE_NAMES.network, password, ...(caFile ? { tlsCaFile: caFile } : {}) });
    await withConnection(target(current.agentPassword), async (client) => {
      // Verifiers, not passwords, reach the server: nothing secret in its log or in pg_stat_statements.
      await client.query('BEGIN');
      // The network role is no superuser: relevo's definer function sets the verifiers (src/postgres/roles.ts).
      const set = (role: string, password: string) => client.query('SELECT _relevo.set_password($1, $2)', [role, scramVerifier(password)]);
      if (dbRoles.includes('replication')) await set(ROLE_NAMES.replication, next.replicationPassword);
      if (dbRoles.includes('agent')) {
        await set(ROLE_NAMES.agent, next.agentPassword);
        await set(ROLE_NAMES.network, next.agentPassword);
      }
      await client.query('COMMIT');
    }).catch((error: Error) => {
      throw new CliError('ROTATION_FAILED', `could not change the passwords on the primary ${leader.name} (${leader.connectAddress}): ${error.message}; nothing was changed`);
    });
    writeCredentialsFile(config, next);
    // The new agent password works now: prove it before reporting success.
    await withConnection(target(next.agentPassword), async (client) => client.query('SELECT 1')).catch((error: Error) => {
      throw new CliError('ROTATION_FAILED', `the new agent password does not work on ${leader.name}: ${error.message}`);
    });
    lines.push(
      `rotated ${dbRoles.map((r) => ROLE_NAMES[r]).join(' and ')} on primary ${leader.name}; ${config.secrets.file} replaced`,
      `agents pick up the new file within a loop; on other hosts copy ${config.secrets.file} there now (streaming sessions keep going meanwhile)`,
    );
  }
  if (roles.includes('api')) {
    const source = config.api.auth?.password;
    if (!source) lines.push('api: no api.auth configured, nothing to rotate');
    else if ('env' in source) lines.push(`api: the password comes from $${source.env}; change it there and restart the agents`);
    else {
      writeFileSafely(source.file, `${generatePassword()}\n`, { mode: 0o600 });
      lines.push(`api: new password in ${source.file}; agents read it on the next request (copy it to other hosts)`);
    }
  }
  return lines.join('\n');
}

/**
 * Asks every agent to re-issue its member certificate (a new generation in the
 * store), then waits until each member's PostgreSQL and API present a new
 * certificate verified by the cluster CA. Nothing restarts: PostgreSQL reloads
 * its ssl files on SIGHUP and the API swaps its TLS context; open sessions keep theirs.
 */
export async function rotateCertificates(handle: ClusterHandle, options: { wait: boolean; timeoutMs?: number }): Promise<string> {
  const caFile = clusterCaFile(handle.config);
  if (!caFile || !existsSync(caFile)) throw new CliError('TLS_OFF', 'TLS is off for this member (tls.enabled: false), or its CA file is missing: nothing to rotate');
  const ca = readFileSync(caFile, 'utf8');
  const { view } = await readCluster(handle.store, handle.keys);
  if (!view.reachable) throw new CliError('STORE_UNREACHABLE', view.error);
  const fingerprints = async (member: (typeof view.members)[number]) => {
    const [pgHost, pgPort] = splitHostPort(member.connectAddress);
    const api = new URL(member.apiUrl);
    return {
      postgres: await serverFingerprint(pgHost, pgPort, ca, true).catch(() => undefined),
      api: api.protocol === 'https:' ? await serverFingerprint(hostOf(api.host), Number(api.port || 443), ca, false).catch(() => undefined) : undefined,
    };
  };
  const before = new Map(await Promise.all(view.members.map(async (m) => [m.name, await fingerprints(m)] as const)));
  for (let attempt = 0; ; attempt++) {
    const current = await handle.store.get(handle.keys.certsRotation);
    const value = JSON.stringify({ generation: rotationGeneration(current?.value) + 1, requestedAt: new Date().toISOString() });
    const written = current ? await handle.store.compareAndSwap(handle.keys.certsRotation, value, current.revision) : await handle.store.create(handle.keys.certsRotation, value);
    if (written !== undefined) break;
    if (attempt >= 5) throw new CliError('CONCURRENT_CHANGE', 'the rotation request kept changing under us; try again');
  }
  if (!options.wait) return `certificate rotation requested for ${view.members.length} member(s)`;
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  const pending = new Set(view.members.map((m) => m.name));
  const lines: string[] = [];
  while (pending.size > 0 && Date.now() < deadline) {
    for (const member of view.members.filter((m) => pending.has(m.name))) {
      const now = await fingerprints(member);
      const old = before.get(member.name)!;
      const renewed = now.postgres !== undefined && now.postgres !== old.postgres && (old.api === undefined || (now.api !== undefined && now.api !== old.api));
      if (renewed) {
        pending.delete(member.name);
        lines.push(`${member.name}: new certificate ${now.postgres!.slice(0, 23)}… served by PostgreSQL${now.api ? ' and the API' : ''}`);
      }
    }
    if (pending.size > 0) await new Promise((resolve) => setTimeout(resolve, 500));
  }
  if (pending.size > 0) throw new CliError('ROTATION_FAILED', `no new certificate yet on ${[...pending].join(', ')}: see their agent logs (TLS_CA_KEY_MISSING: copy ca.key, or replace tls.cert/tls.key)`);
  return lines.join('\n');
}
