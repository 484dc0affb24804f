/**
 * Rotating the cluster CA, the pure part: the phase table, the record the CLI
 * writes to the store (compare-and-swap), its signature, and the checks every
 * agent makes before it trusts what the record says.
 *
 * Phases (one record, `/relevo/<cluster>/tls/ca-rotation`):
 *   trust   - every member, router and CLI trusts old CA + new CA;
 *   reissue - every member's certificate is issued by the new CA (reloaded, no restart);
 *   drop    - the old CA leaves the bundle: only the new CA is trusted;
 *   done    - finished; the record stays as the last rotation's receipt.
 * The CLI moves to the next phase only when every member reports it applied
 * the current one (desired vs observed, habit 4), so a rerun resumes where an
 * interrupted run stopped.
 *
 * A store writer must not be able to make members trust a CA of its choosing:
 * each record is signed with the key of a CA the members already trust (the
 * old CA for `trust`; old or new afterwards, both being trusted by then), and
 * its bundle must be exactly the one its phase calls for.
 */
import { createPrivateKey, createPublicKey, sign, verify, X509Certificate, type KeyObject } from 'node:crypto';

export const CA_ROTATION_PHASES = ['trust', 'reissue', 'drop', 'done'] as const;
export type CaRotationPhase = (typeof CA_ROTATION_PHASES)[number];

export interface CaRotationEdge {
  from: CaRotationPhase;
  to: CaRotationPhase;
  /** What every member must have reported before the CLI takes this edge. */
  requires: string;
}

/** The only edges a rotation takes; anything else is CA_ROTATION_BAD_EDGE. */
export const CA_ROTATION_EDGES: readonly CaRotationEdge[] = [
  { from: 'trust', to: 'reissue', requires: 'every member trusts the old and the new CA (PostgreSQL, API and its own clients reloaded)' },
  { from: 'reissue', to: 'drop', requires: 'every member serves a certificate issued by the new CA' },
  { from: 'drop', to: 'done', requires: 'every member trusts only the new CA' },
];

export type CaRotationCode =
  | 'CA_ROTATION_RECORD_INVALID'
  | 'CA_ROTATION_UNTRUSTED_SIGNER'
  | 'CA_ROTATION_BAD_EDGE'
  | 'CA_ROTATION_NO_CA_KEY'
  | 'CA_ROTATION_NEW_CA_INVALID'
  | 'CA_ROTATION_TIMEOUT'
  | 'CA_ROTATION_CONCURRENT';

export class CaRotationError extends Error {
  constructor(
    readonly code: CaRotationCode,
    message: string,
  ) {
    super(message);
    this.name = 'CaRotationError';
  }
}

export interface CaRotationRecord {
  /** Names this rotation; reports carry it, so a report of an older rotation never counts. */
  id: string;
  phase: CaRotationPhase;
  oldCa: string;
  newCa: string;
  /** What members trust in this phase: bundleFor(phase, oldCa, newCa). */
  bundle: string;
  /** Which CA's key signed (its certificate is oldCa or newCa). */
  signer: 'old' | 'new';
  /** base64 signature over signedPayload(). */
  signature: string;
  startedAt: string;
}

/** What an agent writes once it applied a phase (or why it cannot). */
export interface CaRotationReport {
  id: string;
  phase: CaRotationPhase;
  applied: boolean;
  detail: string;
}

/** The certificates in a PEM bundle, each normalised to one PEM block with a final newline. */
export function splitPem(bundle: string): string[] {
  return [...bundle.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((m) => `${m[0]}\n`);
}

const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256;

/** The certificates' fingerprints, sorted: two bundles trust the same CAs when these are equal. */
export function bundleFingerprints(bundle: string): string[] {
  return splitPem(bundle).map(fingerprintOf).sort();
}

export function sameBundle(a: string, b: string): boolean {
  return bundleFingerprints(a).join() === bundleFingerprints(b).join();
}

/** True when the two bundles trust at least one CA in common (a rotation in progress may differ in one). */
export function sharesCa(a: string, b: string): boolean {
  const left = new Set(bundleFingerprints(a));
  return bundleFingerprints(b).some((f) => left.has(f));
}

/** The bundle a phase calls for: both CAs until the old one is dropped. */
export function bundleFor(phase: CaRotationPhase, oldCa: string, newCa: string): string {
  const [oldPem, newPem] = [splitPem(oldCa)[0]!, splitPem(newCa)[0]!];
  return phase === 'trust' || phase === 'reissue' ? `${oldPem}${newPem}` : newPem;
}

export function edgeOf(from: CaRotationPhase, to: CaRotationPhase): CaRotationEdge {
  const edge = CA_ROTATION_EDGES.find((e) => e.from === from && e.to === to);
  if (!edge) throw new CaRotationError('CA_ROTATION_BAD_EDGE', `a CA rotation does not go from ${from} to ${to}`);
  return edge;
}

export function nextPhase(phase: CaRotationPhase): CaRotationPhase | undefined {
  return CA_ROTATION_EDGES.find((e) => e.from === phase)?.to;
}

/** SHA-256 for EC and RSA CA keys; Ed25519/Ed448 take none. */
const digestFor = (key: KeyObject) => (key.asymmetricKeyType?.startsWith('ed') ? null : 'sha256');

function signedPayload(cluster: string, r: Omit<CaRotationRecord, 'signature'>): Buffer {
  return Buffer.from(JSON.stringify(['relevo-ca-rotation', cluster, r.id, r.phase, r.oldCa, r.newCa, r.bundle, r.signer]));
}

/** A record for `phase`, signed with `keyPem` (the key of the CA named by `signer`). */
export function signedRecord(
  cluster: string,
  base: { id: string; oldCa: string; newCa: string; startedAt: string },
  phase: CaRotationPhase,
  signer: 'old' | 'new',
  keyPem: string,
): CaRotationRecord {
  const unsigned = { ...base, phase, bundle: bundleFor(phase, base.oldCa, base.newCa), signer };
  const key = createPrivateKey(keyPem);
  return { ...unsigned, signature: sign(digestFor(key), signedPayload(cluster, unsigned), key).toString('base64') };
}

/** True when the private key belongs to the certificate. */
export function keyMatches(certPem: string, keyPem: string): boolean {
  try {
    const fromKey = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
    return new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' }).equals(fromKey);
  } catch {
    return false;
  }
}

/** The certificate of the bundle whose key this is (the CA that issues with it). */
export function issuerInBundle(bundle: string, keyPem: string): string | undefined {
  return splitPem(bundle).find((pem) => keyMatches(pem, keyPem));
}

/** Parses a stored record; throws CA_ROTATION_RECORD_INVALID on anything malformed. */
export function parseCaRotation(value: string): CaRotationRecord {
  let r: Partial<CaRotationRecord>;
  try {
    r = JSON.parse(value) as Partial<CaRotationRecord>;
  } catch {
    throw new CaRotationError('CA_ROTATION_RECORD_INVALID', 'the CA rotation record is not JSON');
  }
  const strings = ['id', 'oldCa', 'newCa', 'bundle', 'signature', 'startedAt'] as const;
  if (strings.some((k) => typeof r[k] !== 'string') || !CA_ROTATION_PHASES.includes(r.phase as CaRotationPhase) || (r.signer !== 'old' && r.signer !== 'new')) {
    throw new CaRotationError('CA_ROTATION_RECORD_INVALID', 'the CA rotation record lacks a field or has an unknown phase or signer');
  }
  return r as CaRotationRecord;
}

/**
 * What an agent checks before applying a record, against the CAs it trusts
 * now (`trusted`, its current bundle): both CAs are CA certificates, the
 * bundle is the one the phase calls for, and the signature verifies with
 * the key of a CA that is already in `trusted`.
 */
export function checkCaRotation(cluster: string, record: CaRotationRecord, trusted: string): void {
  const invalid = (why: string) => new CaRotationError('CA_ROTATION_RECORD_INVALID', `CA rotation ${record.id}: ${why}`);
  let oldCert: X509Certificate, newCert: X509Certificate;
  try {
    [oldCert, newCert] = [new X509Certificate(record.oldCa), new X509Certificate(record.newCa)];
  } catch {
    throw invalid('a CA certificate does not parse');
  }
  if (!oldCert.ca || !newCert.ca) throw invalid('oldCa and newCa must both be CA certificates');
  if (oldCert.fingerprint256 === newCert.fingerprint256) throw invalid('the new CA is the old one');
  if (!sameBundle(record.bundle, bundleFor(record.phase, record.oldCa, record.newCa))) throw invalid(`the bundle is not the one phase ${record.phase} calls for`);
  const signerCert = record.signer === 'old' ? oldCert : newCert;
  if (!bundleFingerprints(trusted).includes(signerCert.fingerprint256)) {
    throw new CaRotationError('CA_ROTATION_UNTRUSTED_SIGNER', `CA rotation ${record.id} (${record.phase}) is signed by the ${record.signer} CA, which this member does not trust`);
  }
  const { signature, ...unsigned } = record;
  if (!verify(digestFor(signerCert.publicKey), signedPayload(cluster, unsigned), signerCert.publicKey, Buffer.from(signature, 'base64'))) {
    throw new CaRotationError('CA_ROTATION_UNTRUSTED_SIGNER', `CA rotation ${record.id} (${record.phase}): the signature does not verify with the ${record.signer} CA's key`);
  }
}

/** Members whose report does not yet say they applied this record's phase, with what they said. */
export function pendingMembers(record: CaRotationRecord, members: string[], reports: ReadonlyMap<string, CaRotationReport>): { member: string; detail: string }[] {
  return members.flatMap((member) => {
    const report = reports.get(member);
    if (report && report.id === record.id && report.phase === record.phase && report.applied) return [];
    const detail = !report || report.id !== record.id ? 'no report yet' : report.phase !== record.phase ? `still at ${report.phase}` : report.detail;
    return [{ member, detail }];
  });
}
