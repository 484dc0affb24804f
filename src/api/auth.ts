import { timingSafeEqual } from 'node:crypto';
import type { MemberConfig } from '../config/member.js';
import { readSource } from '../config/secrets.js';

export interface ApiCredentials {
  username: string;
  password: string;
}

/** The member's API credentials, read from their configured source (env or 0600 file). */
export function apiCredentials(config: MemberConfig): ApiCredentials | undefined {
  const auth = config.api.auth;
  return auth ? { username: auth.username, password: readSource(auth.password, 'api.auth.password') } : undefined;
}

export function basicAuthHeader(credentials: ApiCredentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
}

/**
 * The Authorization header an agent sends to its peers: with api.authReadOnly
 * they refuse even the status reads of an election without it, and the store
 * failsafe's confirmations are an authenticated POST (members of a cluster
 * share the API credentials, as the CLI assumes). None when no credentials.
 */
export function peerAuthorization(config: MemberConfig): string | undefined {
  const credentials = apiCredentials(config);
  return credentials && basicAuthHeader(credentials);
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Checks an Authorization header against the configured credentials, in constant time. */
export function authorized(header: string | undefined, expected: ApiCredentials | undefined): boolean {
  if (!expected || !header?.startsWith('Basic ')) return false;
  const decoded = Buffer.from(header.slice(6), 'base64').toString();
  const colon = decoded.indexOf(':');
  if (colon < 0) return false;
  return same(decoded.slice(0, colon), expected.username) && same(decoded.slice(colon + 1), expected.password);
}
