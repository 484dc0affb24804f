/**
 * Where session mode finds the SCRAM verifiers clients authenticate against:
 * a file in pgbouncer's auth_file format, one role per line,
 *
 *   "app" "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"
 *
 * exactly the rolpassword values of pg_authid (docs/router.md shows the one
 * query that writes it). A verifier is not a password, but it allows an
 * offline guessing attack, so the file must not be readable by group or
 * others. Clear passwords are refused. The file is re-read when it changes.
 */
import { readFileSync, statSync } from 'node:fs';
import { parseVerifier, type ScramVerifier } from './scram.js';

export class VerifierFileError extends Error {
  readonly code = 'ROUTER_VERIFIER_FILE';
}

export class VerifierFile {
  private mtimeMs = -1;
  private size = -1;
  private verifiers = new Map<string, ScramVerifier>();

  constructor(readonly path: string) {
    this.load();
  }

  /** The role's verifier, re-reading the file if it changed; undefined for an unknown role. */
  get(user: string): ScramVerifier | undefined {
    try {
      const st = statSync(this.path);
      if (st.mtimeMs !== this.mtimeMs || st.size !== this.size) this.load();
    } catch {
      // Keep the last good copy if the file is briefly missing (replaced by rename).
    }
    return this.verifiers.get(user);
  }

  private load(): void {
    const st = statSync(this.path);
    if ((st.mode & 0o077) !== 0) {
      throw new VerifierFileError(`${this.path} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    }
    const next = new Map<string, ScramVerifier>();
    const lines = readFileSync(this.path, 'utf8').split('\n');
    lines.forEach((raw, i) => {
      const line = raw.trim();
      if (line === '' || line.startsWith(';') || line.startsWith('#')) return;
      const m = /^"((?:[^"]|"")+)"\s+"([^"]*)"/.exec(line);
      const verifier = m ? parseVerifier(m[2] as string) : undefined;
      // Never echo the line: it may hold a clear password by mistake.
      if (!m || !verifier) throw new VerifierFileError(`${this.path} line ${i + 1}: expected "role" "SCRAM-SHA-256$..." (clear passwords and md5 are not accepted)`);
      next.set((m[1] as string).replace(/""/g, '"'), verifier);
    });
    this.verifiers = next;
    this.mtimeMs = st.mtimeMs;
    this.size = st.size;
  }
}
