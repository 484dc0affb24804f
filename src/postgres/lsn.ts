/** PostgreSQL LSNs ("16/B374D848") as bigints, for lag arithmetic. */
export function parseLsn(lsn: string): bigint {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn);
  if (!match) throw new Error(`not an LSN: "${lsn}"`);
  return (BigInt(`0x${match[1]}`) << 32n) + BigInt(`0x${match[2]}`);
}

/** Bytes from `behind` to `ahead`, never negative; null when either is unknown. */
export function lsnDistance(ahead: string | null | undefined, behind: string | null | undefined): number | null {
  if (!ahead || !behind) return null;
  const diff = parseLsn(ahead) - parseLsn(behind);
  return diff > 0n ? Number(diff) : 0;
}

export function compareLsn(a: string, b: string): number {
  const diff = parseLsn(a) - parseLsn(b);
  return diff === 0n ? 0 : diff > 0n ? 1 : -1;
}
