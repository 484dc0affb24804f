/**
 * `relevo certs rotate --ca`: replaces the cluster CA with no failed
 * connection, in three phases recorded in the store (src/tls/ca-rotation.ts).
 * Run it where the CA key is. Interrupted (Ctrl-C, a timeout, a lost host),
 * it resumes at the recorded phase when run again.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { readCluster } from '../cluster/view.js';
import { splitHostPort } from '../postgres/conf.js';
import {
  CaRotationError,
  edgeOf,
  issuerInBundle,
  keyMatches,
  nextPhase,
  parseCaRotation,
  pendingMembers,
  signedRecord,
  splitPem,
  type CaRotationRecord,
  type CaRotationReport,
} from '../tls/ca-rotation.js';
import { applyCaDir, nextKeyOf, readIfExists } from '../tls/ca-rotation-files.js';
import { serverFingerprint } from '../tls/client.js';
import { writeFileSafely } from '../tls/files.js';
import { caFilesOf, type CaFiles } from '../tls/member.js';
import { generateKeyPem, hostOf, issueCaCert } from '../tls/pki.js';
import { CliError, type ClusterHandle } from './context.js';

export interface CaRotationOptions {
  /** Per phase: members must apply it within this time, else CA_ROTATION_TIMEOUT (rerun to resume). */
  phaseTimeoutMs: number;
  /** An operator-provided new CA instead of a generated one. */
  newCaCert?: string;
  newCaKey?: string;
}

/** CaRotationError (a bad record, a bad edge) reaches the operator as a CliError with the same code. */
export async function rotateCa(handle: ClusterHandle, options: CaRotationOptions): Promise<string> {
  try {
    return await runRotation(handle, options);
  } catch (error) {
    if (error instanceof CaRotationError) throw new CliError(error.code, error.message);
    throw error;
  }
}

async function runRotation(handle: ClusterHandle, options: CaRotationOptions): Promise<string> {
  const { config, store, keys } = handle;
  if (!config.tls.enabled) throw new CliError('TLS_OFF', 'TLS is off for this member (tls.enabled: false): there is no CA to rotate');
  const ca = caFilesOf(config);
  const lines: string[] = [];
  let kv = await store.get(keys.caRotation);
  let record = kv ? parseCaRotation(kv.value) : undefined;
  if (!record || record.phase === 'done') {
    record = await startRotation(handle, ca, options, kv?.revision);
    lines.push(`CA rotation ${record.id} started: new CA ${new X509Certificate(record.newCa).fingerprint256.slice(0, 23)}…; its key is ${nextKeyOf(ca)} until every member issues with it`);
  } else {
    if (options.newCaCert) throw new CliError('BAD_ARGUMENT', `CA rotation ${record.id} is at phase ${record.phase}: rerun without --new-ca-cert/--new-ca-key to finish it first`);
    lines.push(`resuming CA rotation ${record.id} at phase ${record.phase}`);
  }
  for (;;) {
    // This host's CLI trusts what the phase calls for (its agents do the same; the writes are idempotent).
    applyCaDir(ca, record);
    if (record.phase === 'done') break;
    const count = await waitForPhase(handle, record, options.phaseTimeoutMs);
    const to = nextPhase(record.phase)!;
    edgeOf(record.phase, to);
    kv = await store.get(keys.caRotation);
    if (!kv || parseCaRotation(kv.value).id !== record.id || parseCaRotation(kv.value).phase !== record.phase) {
      throw new CliError('CA_ROTATION_CONCURRENT', `the CA rotation record changed under this command (now ${kv ? parseCaRotation(kv.value).phase : 'absent'}); rerun to resume`);
    }
    const next = signedRecord(config.cluster, record, to, ...signingKey(ca, record));
    if ((await store.compareAndSwap(keys.caRotation, JSON.stringify(next), kv.revision)) === undefined) {
      throw new CliError('CA_ROTATION_CONCURRENT', 'the CA rotation record changed under this command; rerun to resume');
    }
    lines.push(`${record.phase} → ${to}: ${count} member(s) applied ${record.phase}`);
    if (to === 'drop') await publishCa(handle, record.newCa);
    record = next;
  }
  lines.push(...(await oldCaRefused(handle, record)));
  return lines.join('\n');
}

async function startRotation(handle: ClusterHandle, ca: CaFiles, options: CaRotationOptions, revision: number | undefined): Promise<CaRotationRecord> {
  const { config, store, keys } = handle;
  const key = readIfExists(ca.key);
  const bundle = readIfExists(ca.cert);
  const oldCa = key && bundle ? issuerInBundle(bundle, key) : undefined;
  if (!key || !bundle || !oldCa) {
    throw new CliError(
      'CA_ROTATION_NO_CA_KEY',
      `${ca.key} ${key ? 'does not match ' + ca.cert : 'does not exist'}: the trust step must be signed with the current CA's key, so run this on the host whose tls.caDir holds it` +
        (config.tls.cert ? ' (members with tls.cert/tls.key need certificates from the new CA installed by you during the reissue phase)' : ''),
    );
  }
  if (splitPem(bundle).length > 1) throw new CliError('CA_ROTATION_CONCURRENT', `${ca.cert} already holds ${splitPem(bundle).length} CAs but no rotation is in progress: keep only the cluster CA in it`);
  const newCa = options.newCaCert ? providedCa(options) : await generatedCa(config.cluster);
  writeFileSafely(nextKeyOf(ca), newCa.key, { mode: 0o600 });
  const record = signedRecord(config.cluster, { id: randomBytes(6).toString('hex'), oldCa, newCa: newCa.cert, startedAt: new Date().toISOString() }, 'trust', 'old', key);
  const written = revision === undefined ? await store.create(keys.caRotation, JSON.stringify(record)) : await store.compareAndSwap(keys.caRotation, JSON.stringify(record), revision);
  if (written === undefined) throw new CliError('CA_ROTATION_CONCURRENT', 'another CA rotation started meanwhile; rerun to resume it');
  return record;
}

/** An operator-provided new CA, checked: one CA certificate, its own key, the key file 0600. */
export function providedCa(options: CaRotationOptions): { cert: string; key: string } {
  const invalid = (why: string) => new CliError('CA_ROTATION_NEW_CA_INVALID', why);
  if (!options.newCaKey) throw invalid('--new-ca-cert needs --new-ca-key: every agent issues its certificate with the new CA key');
  const cert = readIfExists(options.newCaCert!);
  const key = readIfExists(options.newCaKey);
  if (cert === undefined || key === undefined) throw invalid(`cannot read ${cert === undefined ? options.newCaCert : options.newCaKey}`);
  if ((statSync(options.newCaKey).mode & 0o077) !== 0) throw invalid(`${options.newCaKey} is readable by group or others; run chmod 600 ${options.newCaKey}`);
  const pem = splitPem(cert);
  if (pem.length !== 1 || !new X509Certificate(pem[0]!).ca) throw invalid(`${options.newCaCert} must hold one CA certificate (basicConstraints CA:TRUE)`);
  if (!keyMatches(pem[0]!, key)) throw invalid(`${options.newCaKey} is not the key of ${options.newCaCert}`);
  return { cert: pem[0]!, key };
}

async function generatedCa(cluster: string): Promise<{ cert: string; key: string }> {
  const scratch = mkdtempSync(join(tmpdir(), 'relevo-ca-'));
  try {
    const key = generateKeyPem();
    writeFileSafely(join(scratch, 'ca.key'), key, { mode: 0o600 });
    return { cert: await issueCaCert(join(scratch, 'ca.key'), cluster), key };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** A key on this host that members trust for the next record: the new CA's (trusted since `trust`), else the old one's. */
function signingKey(ca: CaFiles, record: CaRotationRecord): ['old' | 'new', string] {
  const candidates = [readIfExists(ca.key), readIfExists(nextKeyOf(ca))].filter((k): k is string => k !== undefined);
  const newKey = candidates.find((k) => keyMatches(record.newCa, k));
  if (newKey) return ['new', newKey];
  const oldKey = candidates.find((k) => keyMatches(record.oldCa, k));
  if (oldKey) return ['old', oldKey];
  throw new CliError('CA_ROTATION_NO_CA_KEY', `${ca.dir} holds the key of neither the old nor the new CA of rotation ${record.id}: resume on the host where it started`);
}

/** Waits until every member in the cluster view reports the phase applied (and, from reissue on, serves a certificate of the new CA). */
async function waitForPhase(handle: ClusterHandle, record: CaRotationRecord, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let pending: { member: string; detail: string }[] = [];
  for (;;) {
    const { view } = await readCluster(handle.store, handle.keys);
    if (!view.reachable) throw new CliError('STORE_UNREACHABLE', view.error);
    const reports = new Map<string, CaRotationReport>();
    for (const kv of await handle.store.list(handle.keys.caRotationReportsPrefix)) {
      try {
        reports.set(kv.key.slice(handle.keys.caRotationReportsPrefix.length), JSON.parse(kv.value) as CaRotationReport);
      } catch {
        // an unreadable report counts as none
      }
    }
    pending = pendingMembers(record, view.members.map((m) => m.name), reports);
    if (pending.length === 0 && record.phase !== 'trust') {
      for (const member of view.members) {
        const served = await servesNewCa(member, record.newCa);
        if (served) pending.push({ member: member.name, detail: served });
      }
    }
    if (pending.length === 0) return view.members.length;
    if (Date.now() > deadline) {
      throw new CliError(
        'CA_ROTATION_TIMEOUT',
        `CA rotation ${record.id}, phase ${record.phase}: not applied by ${pending.map((p) => `${p.member} (${p.detail})`).join(', ')}; rerun \`relevo certs rotate --ca\` to resume`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

/** Undefined when the member's PostgreSQL and API both present a certificate that verifies with the new CA alone; else what does not. */
async function servesNewCa(member: { connectAddress: string; apiUrl: string }, newCa: string): Promise<string | undefined> {
  const [host, port] = splitHostPort(member.connectAddress);
  const api = new URL(member.apiUrl);
  const pg = await serverFingerprint(host, port, newCa, true).then(() => undefined, (error: Error) => `PostgreSQL: ${error.message}`);
  const http = api.protocol === 'https:' ? await serverFingerprint(hostOf(api.host), Number(api.port || 443), newCa, false).then(() => undefined, (error: Error) => `API: ${error.message}`) : undefined;
  return pg ?? http;
}

/** The store's CA record follows the rotation, so a member starting later checks its CA directory against the new CA. */
async function publishCa(handle: ClusterHandle, newCa: string): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await handle.store.get(handle.keys.ca);
    const written = current ? await handle.store.compareAndSwap(handle.keys.ca, newCa, current.revision) : await handle.store.create(handle.keys.ca, newCa);
    if (written !== undefined) return;
  }
  throw new CliError('CA_ROTATION_CONCURRENT', 'the published CA kept changing under this command; rerun to resume');
}

/** After `done`: the old CA verifies no member's PostgreSQL certificate any more. */
async function oldCaRefused(handle: ClusterHandle, record: CaRotationRecord): Promise<string[]> {
  const { view } = await readCluster(handle.store, handle.keys);
  if (!view.reachable) return [];
  const still: string[] = [];
  for (const member of view.members) {
    const [host, port] = splitHostPort(member.connectAddress);
    if (await serverFingerprint(host, port, record.oldCa, true).then(() => true, () => false)) still.push(member.name);
  }
  return [still.length === 0 ? `done: every member trusts and serves the new CA only; the old CA verifies none of ${view.members.length} member(s)` : `done, but the old CA still verifies ${still.join(', ')}`];
}
