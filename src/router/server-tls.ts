/**
 * TLS between the session-mode router and the PostgreSQL servers, and the
 * SCRAM channel binding data (tls-server-end-point, RFC 5929) on both sides.
 *
 * To the servers the router behaves like libpq with `sslmode=verify-full
 * channel_binding=require`: SSLRequest, a TLS handshake verified against the
 * cluster CA and the member's address, then SCRAM-SHA-256-PLUS bound to the
 * server's certificate. A server that answers 'N' is refused, never used in
 * plaintext.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isIP, type Socket } from 'node:net';
import { connect as tlsConnect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';

const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

// node-postgres already reads the signature hash from a DER certificate (its own channel binding); reuse it.
const { signatureAlgorithmHashFromCertificate } = createRequire(import.meta.url)('pg/lib/crypto/cert-signatures') as {
  signatureAlgorithmHashFromCertificate(der: Buffer): string;
};

/** tls-server-end-point binding data: the certificate hashed with its signature's hash (SHA-256 for MD5/SHA-1). */
export function endPointHash(certDer: Buffer): Buffer {
  let name = signatureAlgorithmHashFromCertificate(certDer);
  if (name === 'MD5' || name === 'SHA-1') name = 'SHA-256';
  return createHash(name.replace('-', '').toLowerCase()).update(certDer).digest();
}

/**
 * The router's own certificate and key (it presents them to clients that ask
 * for TLS), rebuilt into a TLS context when either file changes: a member
 * certificate re-issued by `relevo certs rotate` (with or without --ca) is
 * served to the next client without a router restart.
 */
export class CertFiles {
  private context: SecureContext | undefined;
  private stamp = '';

  constructor(
    readonly certFile: string,
    readonly keyFile: string,
  ) {
    this.get();
  }

  get(): SecureContext {
    const stamp = [this.certFile, this.keyFile].map((f) => statSync(f)).map((st) => `${st.mtimeMs}:${st.size}:${st.ino}`).join('/');
    if (stamp !== this.stamp || !this.context) {
      try {
        this.context = createSecureContext({ cert: readFileSync(this.certFile), key: readFileSync(this.keyFile) });
        this.stamp = stamp;
      } catch (error) {
        // Caught between the key and the certificate of a re-issue: keep the previous pair until both match.
        if (!this.context) throw error;
      }
    }
    return this.context;
  }
}

/** The cluster CA bundle, re-read when the file changes (a CA rotation adds and later drops a CA). */
export class CaFile {
  private pem = '';
  private stamp = '';

  constructor(readonly path: string) {
    this.get();
  }

  get(): string {
    const st = statSync(this.path);
    const stamp = `${st.mtimeMs}:${st.size}:${st.ino}`;
    if (stamp !== this.stamp) {
      this.pem = readFileSync(this.path, 'utf8');
      this.stamp = stamp;
    }
    return this.pem;
  }
}

/**
 * Upgrades a connected plain socket to TLS the PostgreSQL way. Calls `ready`
 * with the verified TLS socket and the server certificate's binding data, or
 * `failed` (the plain socket is then destroyed by the caller's drop).
 */
export function upgradeToServerTls(
  plain: Socket,
  host: string,
  ca: string,
  ready: (secure: TLSSocket, binding: Buffer) => void,
  failed: (error: Error) => void,
): void {
  plain.once('data', (answer: Buffer) => {
    if (answer[0] !== 0x53 || answer.length !== 1) {
      failed(new Error(`the server at ${host} does not offer TLS (answered ${JSON.stringify(answer.subarray(0, 1).toString('latin1'))}); session mode connects with verify-full only`));
      return;
    }
    const secure = tlsConnect({ socket: plain, host, ca, rejectUnauthorized: true, ...(isIP(host) ? {} : { servername: host }) });
    secure.once('error', failed);
    secure.once('secureConnect', () => {
      secure.removeListener('error', failed);
      const cert = secure.getPeerCertificate();
      if (!cert?.raw) {
        failed(new Error(`the server at ${host} sent no certificate`));
        return;
      }
      ready(secure, endPointHash(cert.raw));
    });
  });
  plain.write(SSL_REQUEST);
}
