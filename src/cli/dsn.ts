import { readCluster } from '../agent/observe.js';
import { splitHostPort } from '../postgres/conf.js';
import { CliError, EXIT, type ClusterHandle } from './context.js';
import { clusterCaFile } from '../tls/member.js';

/**
 * Connection strings for applications that route themselves: libpq
 * multi-host URIs with target_session_attrs, and the JDBC equivalents.
 */
export async function connectionStrings(handle: ClusterHandle, options: { user: string; database: string }): Promise<string> {
  const { view } = await readCluster(handle.store, handle.keys);
  if (!view.reachable) throw new CliError('STORE_UNREACHABLE', view.error);
  const members = [...view.members].sort((a, b) => a.name.localeCompare(b.name));
  if (members.length === 0) throw new CliError('NOT_BOOTSTRAPPED', 'no members published yet: start the agents first');
  const hosts = members.map((m) => {
    const [host, port] = splitHostPort(m.connectAddress);
    return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  });
  const user = encodeURIComponent(options.user);
  const db = encodeURIComponent(options.database);
  const caFile = clusterCaFile(handle.config);
  // verify-full: the client checks the member certificate's CA and that it names the host it dialled.
  const tls = caFile ? `&sslmode=verify-full&sslrootcert=${encodeURIComponent(caFile)}` : '';
  const libpq = (attrs: string) => `postgresql://${user}@${hosts.join(',')}/${db}?target_session_attrs=${attrs}${tls}`;
  const jdbc = (attrs: string) => `jdbc:postgresql://${hosts.join(',')}/${db}?user=${user}&targetServerType=${attrs}${caFile ? `&ssl=true&sslmode=verify-full&sslrootcert=${encodeURIComponent(caFile)}` : ''}`;
  return [
    caFile ? `CA certificate: ${caFile} (public; copy it to client hosts and point sslrootcert at the copy)` : 'TLS is off for this member (tls.enabled: false): these strings do not verify the server',
    `read-write (libpq): ${libpq('read-write')}`,
    `read-only  (libpq): ${libpq('prefer-standby')}`,
    `read-write (JDBC):  ${jdbc('primary')}`,
    `read-only  (JDBC):  ${jdbc('preferSecondary')}&loadBalanceHosts=true`,
    'Passwords go in ~/.pgpass or PGPASSFILE (libpq) or the DataSource (JDBC), never in the URL.',
  ].join('\n');
}
