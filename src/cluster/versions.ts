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

/** What the version check reads of a member. */
export type VersionedMember = Pick<MemberStatus, 'name' | 'postgresVersion'>;

/**
 * Judges promoting `candidate` while `reference` (the primary, or the other
 * members when there is none) run their versions. A different major version
 * cannot take over a physical replica set: refused. An older minor version
 * is allowed (rolling back a minor update) but worth a warning.
 */
export function promotionVersionCheck(candidate: VersionedMember, reference: VersionedMember[]): { refuse?: string; warn?: string } {
  const mine = parseServerVersion(candidate.postgresVersion);
  if (!mine) return {};
  for (const other of reference) {
    const theirs = parseServerVersion(other.postgresVersion);
    if (!theirs || other.name === candidate.name) continue;
    if (theirs.major !== mine.major) {
      return { refuse: `member ${candidate.name} runs PostgreSQL ${mine.major}.${mine.minor} but ${other.name} runs ${theirs.major}.${theirs.minor}: promoting across major versions is refused` };
    }
  }
  const newer = reference.map((m) => parseServerVersion(m.postgresVersion)).filter((v) => v !== undefined && v.major === mine.major && v.minor > mine.minor);
  if (newer.length > 0) {
    return { warn: `member ${candidate.name} runs PostgreSQL ${mine.major}.${mine.minor}, older than ${newer.map((v) => `${v!.major}.${v!.minor}`).join(', ')}: the primary moves to an older minor version` };
  }
  return {};
}
