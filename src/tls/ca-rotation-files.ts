/**
 * A CA rotation on one host's CA directory (the CLI's and each agent's):
 * ca.crt becomes the bundle the phase calls for, and from `reissue` on the
 * issuing key ca.key becomes the new CA's, taken from ca.next.key where the
 * rotation was started (or copied there by the operator). Every step checks
 * the state first, so agents sharing one directory, and reruns, are harmless.
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { keyMatches, sameBundle, type CaRotationRecord } from './ca-rotation.js';
import { writeFileSafely } from './files.js';
import type { CaFiles } from './member.js';

export const nextKeyOf = (ca: CaFiles) => join(ca.dir, 'ca.next.key');

export function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

export interface CaDirStep {
  changed: boolean;
  /** Why this host cannot apply the phase yet (what to copy where). */
  waiting?: string;
}

export function applyCaDir(ca: CaFiles, record: CaRotationRecord): CaDirStep {
  let changed = false;
  const current = readIfExists(ca.cert);
  if (record.phase !== 'trust') {
    const key = readIfExists(ca.key);
    if (key !== undefined && !keyMatches(record.newCa, key)) {
      const next = readIfExists(nextKeyOf(ca));
      if (next === undefined || !keyMatches(record.newCa, next)) {
        return { changed, waiting: `${ca.key} is still the old CA's key and ${nextKeyOf(ca)} holds no key of the new CA: copy ca.next.key from the host where the rotation started into ${ca.dir}` };
      }
      // The bundle first (it holds both CAs already from `trust`), then the key: ca.crt always holds the key's certificate.
      if (current === undefined || !sameBundle(current, `${record.oldCa}${record.newCa}`)) writeFileSafely(ca.cert, `${record.oldCa}${record.newCa}`, { mode: 0o644 });
      writeFileSafely(ca.key, next, { mode: 0o600 });
      changed = true;
    }
    if (key !== undefined) rmSync(nextKeyOf(ca), { force: true });
  }
  if (readIfExists(ca.cert) === undefined || !sameBundle(readIfExists(ca.cert)!, record.bundle)) {
    writeFileSafely(ca.cert, record.bundle, { mode: 0o644 });
    changed = true;
  }
  return { changed };
}
