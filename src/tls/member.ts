/**
 * The cluster CA and this member's certificate on disk.
 *
 * Layout:
 * - CA directory (tls.caDir, default `ca/` beside secrets.file), owned by the
 *   agent's user, 0700: ca.crt, and ca.key where this host may issue certificates.
 * - Member directory `<dataDir>.tls/`, owned by the PostgreSQL OS user, 0700:
 *   server.crt, server.key (0600) and a copy of ca.crt — what PostgreSQL,
 *   its walreceiver, pg_basebackup and pg_rewind read. Outside the data
 *   directory, so a base backup never copies one member's key to another.
 *
 * The CA certificate (public) is also published in the store: the first member
 * to start creates the CA when none exists; every other member checks that its
 * ca.crt is the published one. The CA key never enters the store.
 */
import { ensureOwnedDir } from '../postgres/owned-fs.js';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { ClusterKeys } from '../cluster/keys.js';
import { apiUrlOf, connectAddressOf, type MemberConfig } from '../config/member.js';
import type { Store } from '../store/store.js';
import type { OsUser } from '../util/os-user.js';
import { issuerInBundle, sharesCa, splitPem } from './ca-rotation.js';
import { ensurePrivateDir, renameDurably, writeFileSafely } from './files.js';
import { certFacts, certNames, generateKeyPem, hostOf, issueCaCert, issueMemberCert, issuedBy, needsRenewal, TlsError } from './pki.js';

export interface CaFiles {
  dir: string;
  cert: string;
  key: string;
}

/** Files PostgreSQL and the agent use for this member. */
export interface TlsFiles {
  dir: string;
  caCert: string;
  cert: string;
  key: string;
}

export function caFilesOf(config: MemberConfig): CaFiles {
  const dir = config.tls.caDir ?? join(dirname(config.secrets.file), 'ca');
  return { dir, cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') };
}

/** Undefined when TLS is off for this member. */
export function memberTlsFiles(config: MemberConfig): TlsFiles | undefined {
  if (!config.tls.enabled) return undefined;
  const dir = `${config.postgres.dataDir.replace(/\/+$/, '')}.tls`;
  return { dir, caCert: join(dir, 'ca.crt'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key') };
}

/**
 * Names the member certificate carries: the connect address (clients and
 * replicas), the listen address, the API's host, and tls.extraNames (DNS
 * names, a router that relays TLS end to end).
 */
export function memberCertNames(config: MemberConfig): string[] {
  return certNames([
    hostOf(connectAddressOf(config)),
    config.postgres.listen,
    new URL(apiUrlOf(config)).hostname,
    hostOf(config.api.listen),
    ...config.tls.extraNames,
  ]);
}

/** Path of the cluster CA certificate on this host: the CA directory's, else the member's copy; undefined when TLS is off. */
export function clusterCaFile(config: MemberConfig): string | undefined {
  if (!config.tls.enabled) return undefined;
  const files = memberTlsFiles(config)!;
  const ca = caFilesOf(config).cert;
  return existsSync(ca) || !existsSync(files.caCert) ? ca : files.caCert;
}

/** The cluster CA certificate as this host knows it: the CA directory, else the member's copy. */
export function clusterCaPem(config: MemberConfig): string | undefined {
  const files = memberTlsFiles(config);
  return readIfExists(caFilesOf(config).cert) ?? (files ? readIfExists(files.caCert) : undefined);
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

const samePem = (a: string, b: string) => a.replace(/\s+/g, '') === b.replace(/\s+/g, '');

/** The certificate is signed by one of the bundle's CAs. */
export function issuedByBundle(certPem: string, bundle: string): boolean {
  return splitPem(bundle).some((ca) => issuedBy(certPem, ca));
}

/**
 * Makes sure this host has the cluster CA certificate: creates the CA when the
 * store has none and this host has none (first start of a new cluster),
 * publishes an operator-provided one, and refuses a CA other than the
 * published one. Waits up to waitMs for another member's CA to appear in a
 * shared directory, then fails with what to copy where.
 */
export async function ensureClusterCa(config: MemberConfig, store: Store, keys: ClusterKeys, log: Logger, waitMs = 60_000): Promise<void> {
  const ca = caFilesOf(config);
  const deadline = Date.now() + waitMs;
  let told = false;
  for (;;) {
    const local = readIfExists(ca.cert);
    let published = await store.get(keys.ca);
    if (local !== undefined) {
      if (!published) {
        await store.create(keys.ca, local);
        published = await store.get(keys.ca);
      }
      // During a CA rotation the local bundle and the published one may differ in one CA; they must share one.
      if (published && !sharesCa(published.value, local)) {
        throw new TlsError('TLS_CA_MISMATCH', `${ca.cert} is not the CA of cluster ${config.cluster} (another CA is published in the store): copy the cluster's CA directory to ${ca.dir}`);
      }
      return;
    }
    if (!published && config.tls.cert === undefined) {
      if (await createCa(config, ca, store, keys)) {
        log.info({ caDir: ca.dir }, `created the cluster CA in ${ca.dir}; copy this directory to every host (ca.key only where agents issue their own certificates)`);
        return;
      }
      continue;
    }
    if (Date.now() > deadline) {
      throw new TlsError(
        'TLS_CA_MISSING',
        `member ${config.name}: ${ca.cert} does not exist${published ? ' but the cluster CA exists' : ''}: copy the CA directory (ca.crt, and ca.key so this agent can issue its certificate) from the host that created it, or set tls.caDir`,
      );
    }
    if (!told) log.warn({ caDir: ca.dir }, `waiting for the cluster CA in ${ca.dir}`);
    told = true;
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

/** Generates a CA; keeps it only if its certificate wins the store's create (one CA per cluster). */
async function createCa(config: MemberConfig, ca: CaFiles, store: Store, keys: ClusterKeys): Promise<boolean> {
  mkdirSync(dirname(ca.dir), { recursive: true, mode: 0o700 });
  ensurePrivateDir(ca.dir, 0o700);
  const scratch = mkdtempSync(join(tmpdir(), 'relevo-ca-'));
  try {
    const keyFile = join(scratch, 'ca.key');
    writeFileSafely(keyFile, generateKeyPem(), { mode: 0o600 });
    const certPem = await issueCaCert(keyFile, config.cluster);
    if ((await store.create(keys.ca, certPem)) === undefined) return false;
    // Key first: a member waiting on a shared directory sees ca.crt only once ca.key is there too.
    writeFileSafely(ca.key, readFileSync(keyFile), { mode: 0o600 });
    writeFileSafely(ca.cert, certPem, { mode: 0o644 });
    return true;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

export interface MemberCertResult {
  changed: boolean;
  fingerprint: string;
  reason: string;
}

/**
 * Puts this member's certificate, key and the CA certificate in its TLS
 * directory, owned by the PostgreSQL OS user. Issues a new certificate from
 * the CA key when there is none, when it lacks a name, is not from the
 * cluster CA, is in the last third of its life, or when `force` (rotation).
 * With tls.cert/tls.key the operator's files are copied instead.
 */
export async function ensureMemberCert(config: MemberConfig, user: OsUser, options: { force: boolean; now: Date }): Promise<MemberCertResult> {
  const files = memberTlsFiles(config);
  if (!files) throw new Error('TLS is off for this member');
  const ca = caFilesOf(config);
  const caPem = readIfExists(ca.cert);
  if (caPem === undefined) throw new TlsError('TLS_CA_MISSING', `member ${config.name}: ${ca.cert} does not exist; copy the cluster CA directory there`);
  // Beside the data directory: missing parents are created for the PostgreSQL user, as the data directory's are (owned-fs).
  ensureOwnedDir(files.dir, user, 0o700);
  let changed = false;
  if (!samePem(readIfExists(files.caCert) ?? '', caPem)) {
    writeFileSafely(files.caCert, caPem, { mode: 0o644, owner: user });
    changed = true;
  }
  if (config.tls.cert !== undefined && config.tls.key !== undefined) {
    const copied = copyOperatorCert(config, files, caPem, user);
    return { ...copied, changed: changed || copied.changed };
  }
  const current = readIfExists(files.cert);
  // ca.crt may hold two CAs (a CA rotation): certificates come from the one whose key is ca.key.
  const caKey = readIfExists(ca.key);
  const issuer = caKey === undefined ? undefined : issuerInBundle(caPem, caKey);
  if (caKey !== undefined && issuer === undefined) throw new TlsError('TLS_CA_MISMATCH', `${ca.key} belongs to none of the CA certificates in ${ca.cert}: copy the cluster's CA directory to ${ca.dir}`);
  const why = options.force
    ? 'rotation requested'
    : current === undefined || !existsSync(files.key)
      ? 'no certificate yet'
      : issuer
        ? needsRenewal(current, issuer, memberCertNames(config), options.now)
        : issuedByBundle(current, caPem)
          ? undefined
          : 'not signed by the cluster CA';
  if (!why) return { changed, fingerprint: certFacts(current!).fingerprint, reason: 'certificate valid' };
  if (!issuer) {
    throw new TlsError(
      'TLS_CA_KEY_MISSING',
      `member ${config.name} needs a certificate (${why}) but ${ca.key} does not exist: copy ca.key there, or issue one and set tls.cert/tls.key`,
    );
  }
  const nextKey = `${files.key}.next`;
  writeFileSafely(nextKey, generateKeyPem(), { mode: 0o600, owner: user });
  // openssl -CA reads the first certificate of a file: give it the issuing CA alone.
  const scratch = mkdtempSync(join(tmpdir(), 'relevo-issuer-'));
  let pem: string;
  try {
    writeFileSafely(join(scratch, 'issuer.crt'), issuer, { mode: 0o644 });
    pem = await issueMemberCert({
      keyFile: nextKey,
      caCertFile: join(scratch, 'issuer.crt'),
      caKeyFile: ca.key,
      commonName: `${config.name}.${config.cluster}`,
      names: memberCertNames(config),
      days: config.tls.validityDays,
    });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  renameDurably(nextKey, files.key);
  writeFileSafely(files.cert, pem, { mode: 0o644, owner: user });
  return { changed: true, fingerprint: certFacts(pem).fingerprint, reason: why };
}

function copyOperatorCert(config: MemberConfig, files: TlsFiles, caPem: string, user: OsUser): { changed: boolean; fingerprint: string; reason: string } {
  const certPem = readIfExists(config.tls.cert!);
  if (certPem === undefined) throw new TlsError('TLS_CERT_INVALID', `tls.cert: cannot read ${config.tls.cert}`);
  if ((statSync(config.tls.key!).mode & 0o077) !== 0) throw new TlsError('TLS_CERT_INVALID', `tls.key: ${config.tls.key} is readable by group or others; run chmod 600 ${config.tls.key}`);
  if (!issuedByBundle(certPem, caPem)) throw new TlsError('TLS_CERT_INVALID', `tls.cert: ${config.tls.cert} is not signed by the cluster CA ${caFilesOf(config).cert}`);
  const keyPem = readFileSync(config.tls.key!, 'utf8');
  let changed = false;
  if (readIfExists(files.key) !== keyPem) {
    writeFileSafely(files.key, keyPem, { mode: 0o600, owner: user });
    changed = true;
  }
  if (readIfExists(files.cert) !== certPem) {
    writeFileSafely(files.cert, certPem, { mode: 0o644, owner: user });
    changed = true;
  }
  return { changed, fingerprint: certFacts(certPem).fingerprint, reason: 'operator-provided certificate' };
}
