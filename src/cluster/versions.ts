import type { MemberStatus } from './types.js';

/** A PostgreSQL server_version reduced to what upgrades care about: 10 and later number releases major.minor. */
export interface ServerVersion {
  major: number;
  minor: number;
  text: string;
}

/** Parses server_version ("15.14", "15.14 (Debian 15.14-0+deb12u1)", "16beta2"); undefined when unknown. */
export function parseServerVersion(text: string | null | undefined): ServerVersion | undefined {
  const match = text?.match(/^(\d+)(?:\.(\d+))?/);
  if (!match) return undefined;
  return { major: Number(match[1]), minor: Number(match[2] ?? 0), text: text! };
}

/** Distinct major.minor versions the members run, sorted; more than one means a mixed cluster. */
export function versionsInUse(members: MemberStatus[]): string[] {
  const seen = new Set<string>();
  for (const m of members) {
    const v = parseServerVersion(m.postgresVersion);
    if (v) seen.add(`${v.major}.${v.minor}`);
  }
  return [...seen].sort((a, b) => {
    const [am, an] = a.split('.').map(Number);
    const [bm, bn] = b.split('.').map(Number);
    return am! - bm! || an! - bn!;
  });
}
