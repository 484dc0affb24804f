import { randomBytes } from 'node:crypto';
import { passwordKeys } from '../router/scram.js';

/**
 * SCRAM-SHA-256 verifier as PostgreSQL stores it (RFC 5802/7677). relevo sends
 * CREATE/ALTER ROLE with the verifier, so the clear password never reaches the
 * server's statement log. The keys are derived as the SCRAM client derives
 * them from a password (router/scram.ts), so the two cannot drift apart.
 */
export function scramVerifier(password: string, iterations = 4096): string {
  const salt = randomBytes(16);
  const { storedKey, serverKey } = passwordKeys(password, salt, iterations);
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}
