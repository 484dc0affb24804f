/**
 * How relevo's own clients use TLS: libpq settings for PostgreSQL programs,
 * node-postgres options for the agent, and an HTTPS client for the REST API
 * (CLI and peer calls) that verifies the server against the cluster CA.
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as netConnect, isIP } from 'node:net';
import { checkServerIdentity, connect as tlsConnect } from 'node:tls';
import type { TlsFiles } from './member.js';

/** libpq connection parameters: verify the server's certificate and name, and bind SCRAM to the TLS channel. */
export function libpqTlsParams(caFile: string | undefined): string {
  return caFile ? `sslmode=verify-full sslrootcert=${caFile} channel_binding=require` : 'sslmode=prefer';
}

/** The same as libpq environment variables (pg_basebackup, which takes no conninfo string here). */
export function libpqTlsEnv(caFile: string | undefined): Record<string, string> {
  return caFile ? { PGSSLMODE: 'verify-full', PGSSLROOTCERT: caFile, PGCHANNELBINDING: 'require' } : {};
}

/** node-postgres options: TLS verified against the CA file, SCRAM-SHA-256-PLUS (channel binding). */
export function pgTlsOptions(caFile: string | undefined): { ssl?: { ca: string; rejectUnauthorized: true }; enableChannelBinding?: boolean } {
  return caFile ? { ssl: { ca: readFileSync(caFile, 'utf8'), rejectUnauthorized: true }, enableChannelBinding: true } : {};
}

export interface ApiClientTls {
  /** CA that signed the server (the cluster CA). */
  ca: string;
  /** Optional client certificate and key (a member's own, for peer calls). */
  cert?: string;
  key?: string;
}

/** Reads the client TLS material of a member: its CA copy, and its certificate as a client certificate. */
export function memberApiClientTls(files: TlsFiles | undefined, withClientCert: boolean): ApiClientTls | undefined {
  if (!files) return undefined;
  try {
    const ca = readFileSync(files.caCert, 'utf8');
    return withClientCert ? { ca, cert: readFileSync(files.cert, 'utf8'), key: readFileSync(files.key, 'utf8') } : { ca };
  } catch {
    return undefined;
  }
}

/** How an agent reaches a peer's API: Basic credentials when configured, the cluster CA (and our certificate) over HTTPS. */
export interface PeerAccess {
  authorization?: string;
  tls?: ApiClientTls;
}

/** apiCall options for a peer request. */
export function peerRequest(access: PeerAccess, headers: Record<string, string> = {}): { headers: Record<string, string>; tls?: ApiClientTls } {
  return { headers: { ...headers, ...(access.authorization ? { authorization: access.authorization } : {}) }, ...(access.tls ? { tls: access.tls } : {}) };
}

export interface ApiResponse {
  status: number;
  body: string;
}

/** One REST call; https URLs are verified against `tls.ca` (never against the system store alone). */
export function apiCall(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string; tls?: ApiClientTls; timeoutMs: number; /** Longer answers are cut here (default 1 MB). */ maxBodyBytes?: number },
): Promise<ApiResponse> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const secure = target.protocol === 'https:';
    if (secure && !options.tls) {
      reject(new Error(`${url}: no cluster CA to verify the server with`));
      return;
    }
    const common = { method: options.method ?? 'GET', headers: options.headers ?? {}, timeout: options.timeoutMs };
    const req = secure
      ? httpsRequest(target, { ...common, ca: options.tls!.ca, cert: options.tls!.cert, key: options.tls!.key, rejectUnauthorized: true })
      : httpRequest(target, common);
    const timer = setTimeout(() => req.destroy(new Error(`no answer from ${url} within ${options.timeoutMs} ms`)), options.timeoutMs);
    req.on('response', (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        if (body.length < (options.maxBodyBytes ?? 1 << 20)) body += chunk;
      });
      response.on('end', () => {
        clearTimeout(timer);
        resolve({ status: response.statusCode ?? 0, body });
      });
      response.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
    req.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    req.end(options.body);
  });
}

/**
 * The SHA-256 fingerprint of the certificate a server presents, verified
 * against the CA: for PostgreSQL (`postgres: true`) after an SSLRequest, for
 * the API directly. Used to confirm a rotation reached every member.
 */
export function serverFingerprint(host: string, port: number, ca: string, postgres: boolean, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port });
    const timer = setTimeout(() => socket.destroy(new Error(`no TLS answer from ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
    const fail = (error: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    };
    socket.once('error', fail);
    const handshake = () => {
      const secure = tlsConnect({ socket, ca, rejectUnauthorized: true, ...(isIP(host) ? {} : { servername: host }), checkServerIdentity: (_name, cert) => checkServerIdentity(host, cert) });
      secure.once('error', fail);
      secure.once('secureConnect', () => {
        clearTimeout(timer);
        const fingerprint = secure.getPeerCertificate().fingerprint256;
        secure.destroy();
        resolve(fingerprint);
      });
    };
    socket.once('connect', () => {
      if (!postgres) return handshake();
      const request = Buffer.alloc(8);
      request.writeInt32BE(8, 0);
      request.writeInt32BE(80877103, 4);
      socket.write(request);
      socket.once('data', (answer) => (answer[0] === 0x53 ? handshake() : fail(new Error(`${host}:${port} does not offer TLS`))));
    });
  });
}
