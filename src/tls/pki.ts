/**
 * Certificates for the cluster: an ECDSA P-256 CA and one certificate per
 * member. Keys are generated in-process (node:crypto) and written by
 * ./files.ts; the Debian `openssl` program only signs, reading keys from files
 * (nothing secret in argv). Certificates are parsed with node's X509Certificate.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';

export class TlsError extends Error {
  constructor(
    readonly code: 'TLS_CA_MISSING' | 'TLS_CA_MISMATCH' | 'TLS_CA_KEY_MISSING' | 'TLS_CERT_INVALID' | 'TLS_OPENSSL_FAILED',
    message: string,
  ) {
    super(message);
    this.name = 'TlsError';
  }
}

export function generateKeyPem(): string {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}

function openssl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { timeout: 30_000, maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
      if (error) reject(new TlsError('TLS_OPENSSL_FAILED', `openssl ${args[0]} failed: ${stderr.trim().split('\n').slice(-3).join(' | ') || error.message}`));
      else resolve(stdout);
    });
  });
}

/** A self-signed CA certificate for the key in keyFile. */
export function issueCaCert(keyFile: string, cluster: string, days = 3650): Promise<string> {
  return openssl([
    'req', '-new', '-x509', '-key', keyFile, '-subj', `/O=relevo/CN=relevo cluster ${cluster} CA`, '-days', String(days),
    '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

/** A member certificate (server and client use) for the key in keyFile, signed by the CA. */
export function issueMemberCert(options: { keyFile: string; caCertFile: string; caKeyFile: string; commonName: string; names: string[]; days: number }): Promise<string> {
  const san = options.names.map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  return openssl([
    'req', '-new', '-x509', '-key', options.keyFile, '-CA', options.caCertFile, '-CAkey', options.caKeyFile,
    '-subj', `/O=relevo/CN=${options.commonName}`, '-days', String(options.days),
    '-addext', `subjectAltName=${san}`, '-addext', 'extendedKeyUsage=serverAuth,clientAuth',
    '-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'keyUsage=critical,digitalSignature',
  ]);
}

export interface CertFacts {
  fingerprint: string;
  notAfter: Date;
  notBefore: Date;
  /** DNS names and IP addresses from subjectAltName. */
  names: string[];
}

export function certFacts(pem: string): CertFacts {
  const cert = new X509Certificate(pem);
  const names = (cert.subjectAltName ?? '')
    .split(',')
    .map((part) => part.trim())
    .map((part) => part.replace(/^DNS:/, '').replace(/^IP Address:/, ''))
    .filter(Boolean);
  return { fingerprint: cert.fingerprint256, notAfter: new Date(cert.validTo), notBefore: new Date(cert.validFrom), names };
}

/** The certificate was signed by this CA (and the CA's certificate is a CA). */
export function issuedBy(certPem: string, caPem: string): boolean {
  try {
    const cert = new X509Certificate(certPem);
    const ca = new X509Certificate(caPem);
    return ca.ca && cert.checkIssued(ca) && cert.verify(ca.publicKey);
  } catch {
    return false;
  }
}

/** True when the certificate should be replaced: wrong CA, names missing, or less than a third of its life left. */
export function needsRenewal(certPem: string, caPem: string, names: string[], now: Date): string | undefined {
  if (!issuedBy(certPem, caPem)) return 'not signed by the cluster CA';
  const facts = certFacts(certPem);
  const cert = new X509Certificate(certPem);
  const missing = names.filter((n) => (isIP(n) ? cert.checkIP(n) : cert.checkHost(n, { wildcards: false })) === undefined);
  if (missing.length > 0) return `lacks ${missing.join(', ')}`;
  const life = facts.notAfter.getTime() - facts.notBefore.getTime();
  if (facts.notAfter.getTime() - now.getTime() < life / 3) return `expires ${facts.notAfter.toISOString()}`;
  return undefined;
}

/** Host names and addresses clients use to reach a member, wildcards left out. */
export function hostOf(address: string): string {
  const index = address.lastIndexOf(':');
  const host = index > 0 && !address.endsWith(']') && /:\d+$/.test(address) ? address.slice(0, index) : address;
  return host.replace(/^\[|\]$/g, '');
}

const WILDCARDS = new Set(['0.0.0.0', '::', '*', '']);
export function certNames(hosts: string[]): string[] {
  // listen_addresses may be a list; URL hosts of IPv6 addresses come in brackets.
  const names = hosts.flatMap((h) => h.split(',')).map((h) => h.trim().replace(/^\[|\]$/g, ''));
  return [...new Set(names.filter((h) => !WILDCARDS.has(h)))];
}
