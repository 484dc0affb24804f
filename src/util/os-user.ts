import { execFileSync } from 'node:child_process';

export interface OsUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/**
 * Resolves an OS user by name. PostgreSQL refuses to run as root, so when the
 * agent runs as root every PostgreSQL program is spawned with this uid/gid.
 */
export function lookupOsUser(name: string): OsUser {
  let line: string;
  try {
    line = execFileSync('getent', ['passwd', name], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error(`OS user "${name}" does not exist: create it (e.g. install postgresql-15) or set postgres.osUser`);
  }
  const [, , uid, gid, , home] = line.split(':');
  return { name, uid: Number(uid), gid: Number(gid), home: home ?? '/' };
}

export function runningAsRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** spawn() options that make a child run as `user` when we are root (no-op otherwise). */
export function spawnIdentity(user: OsUser): { uid?: number; gid?: number } {
  return runningAsRoot() ? { uid: user.uid, gid: user.gid } : {};
}
