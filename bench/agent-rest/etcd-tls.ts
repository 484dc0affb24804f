/**
 * A single etcd serving clients over TLS with client-certificate authentication,
 * as a production store is set up (docs/deployment.md): a CA, a server
 * certificate for 127.0.0.1 and one client certificate that relevo and Patroni
 * both use. The files are readable by the postgres OS user (Patroni runs as it).
 */
import { chownSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPem, issueCaCert, issueMemberCert } from '../../src/tls/pki.js';
import { writeFileSafely } from '../../src/tls/files.js';
import { lookupOsUser } from '../../src/util/os-user.js';
import { startEtcd, type EtcdProcess } from '../../test/helpers/etcd.js';

export interface EtcdTlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export async function startTlsEtcd(): Promise<{ etcd: EtcdProcess; files: EtcdTlsFiles; cleanup: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'relevo-bench-etcd-tls-'));
  const file = (name: string) => join(dir, name);
  writeFileSafely(file('ca.key'), generateKeyPem(), { mode: 0o600 });
  writeFileSafely(file('ca.crt'), await issueCaCert(file('ca.key'), 'etcd'), { mode: 0o644 });
  for (const name of ['server', 'client']) {
    writeFileSafely(file(`${name}.key`), generateKeyPem(), { mode: 0o600 });
    writeFileSafely(file(`${name}.crt`), await issueMemberCert({ keyFile: file(`${name}.key`), caCertFile: file('ca.crt'), caKeyFile: file('ca.key'), commonName: name, names: ['127.0.0.1'], days: 2 }), { mode: 0o644 });
  }
  const postgres = lookupOsUser('postgres');
  chownSync(dir, postgres.uid, postgres.gid);
  chownSync(file('client.key'), postgres.uid, postgres.gid);
  const files = { ca: file('ca.crt'), cert: file('client.crt'), key: file('client.key') };
  const pem = (name: string) => readFileSync(file(name), 'utf8');
  const etcd = await startEtcd({ tls: { certFile: file('server.crt'), keyFile: file('server.key'), caFile: files.ca, client: { ca: pem('ca.crt'), cert: pem('client.crt'), key: pem('client.key') } } });
  return { etcd, files, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
