import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  bundleFingerprints,
  bundleFor,
  CA_ROTATION_EDGES,
  checkCaRotation,
  edgeOf,
  issuerInBundle,
  nextPhase,
  parseCaRotation,
  pendingMembers,
  sharesCa,
  signedRecord,
  type CaRotationRecord,
  type CaRotationReport,
} from '../../src/tls/ca-rotation.js';
import { applyCaDir, nextKeyOf } from '../../src/tls/ca-rotation-files.js';
import { writeFileSafely } from '../../src/tls/files.js';
import { CertFiles } from '../../src/router/server-tls.js';
import { generateKeyPem, issueCaCert, issueMemberCert } from '../../src/tls/pki.js';
import { providedCa } from '../../src/cli/rotate-ca.js';

interface Ca {
  cert: string;
  key: string;
}

describe('CA rotation: phase table, signed records, bundle checks', () => {
  let dir: string;
  let oldCa: Ca, newCa: Ca, intruder: Ca;
  const base = () => ({ id: 'r1', oldCa: oldCa.cert, newCa: newCa.cert, startedAt: '2026-12-02T00:00:00Z' });
  const code = (code: string) => (error: unknown) => (error as { code?: string }).code === code;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'relevo-ca-rotation-'));
    const make = async (name: string): Promise<Ca> => {
      const key = generateKeyPem();
      writeFileSafely(join(dir, `${name}.key`), key, { mode: 0o600 });
      const cert = await issueCaCert(join(dir, `${name}.key`), name);
      writeFileSafely(join(dir, `${name}.crt`), cert, { mode: 0o644 });
      return { key, cert };
    };
    [oldCa, newCa, intruder] = await Promise.all([make('old'), make('new'), make('intruder')]);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('goes trust, reissue, drop, done and nowhere else', () => {
    assert.deepEqual(CA_ROTATION_EDGES.map((e) => `${e.from}>${e.to}`), ['trust>reissue', 'reissue>drop', 'drop>done']);
    assert.equal(nextPhase('trust'), 'reissue');
    assert.equal(nextPhase('done'), undefined);
    assert.throws(() => edgeOf('trust', 'drop'), code('CA_ROTATION_BAD_EDGE'));
    assert.throws(() => edgeOf('done', 'trust'), code('CA_ROTATION_BAD_EDGE'));
  });

  it('trusts both CAs until the old one is dropped', () => {
    const both = bundleFingerprints(`${oldCa.cert}${newCa.cert}`);
    assert.deepEqual(bundleFingerprints(bundleFor('trust', oldCa.cert, newCa.cert)), both);
    assert.deepEqual(bundleFingerprints(bundleFor('reissue', oldCa.cert, newCa.cert)), both);
    assert.deepEqual(bundleFingerprints(bundleFor('drop', oldCa.cert, newCa.cert)), bundleFingerprints(newCa.cert));
    assert.ok(sharesCa(bundleFor('trust', oldCa.cert, newCa.cert), oldCa.cert));
    assert.ok(!sharesCa(newCa.cert, oldCa.cert));
  });

  it('accepts each step signed by a CA the member already trusts, and round-trips through JSON', () => {
    const trust = parseCaRotation(JSON.stringify(signedRecord('c', base(), 'trust', 'old', oldCa.key)));
    checkCaRotation('c', trust, oldCa.cert);
    const both = `${oldCa.cert}${newCa.cert}`;
    checkCaRotation('c', signedRecord('c', base(), 'reissue', 'new', newCa.key), both);
    checkCaRotation('c', signedRecord('c', base(), 'drop', 'new', newCa.key), both);
    checkCaRotation('c', signedRecord('c', base(), 'drop', 'old', oldCa.key), both);
  });

  it('refuses a CA introduced by a store writer: its own signature, a swapped CA, a changed bundle, another cluster', () => {
    // The writer signs "trust my CA" with its own CA's key: members do not trust it.
    const forged = signedRecord('c', { ...base(), newCa: intruder.cert }, 'trust', 'new', intruder.key);
    assert.throws(() => checkCaRotation('c', forged, oldCa.cert), code('CA_ROTATION_UNTRUSTED_SIGNER'));
    // A genuine record with the new CA swapped for the writer's: the signature no longer verifies.
    const genuine = signedRecord('c', base(), 'trust', 'old', oldCa.key);
    const swapped: CaRotationRecord = { ...genuine, newCa: intruder.cert, bundle: `${oldCa.cert}${intruder.cert}` };
    assert.throws(() => checkCaRotation('c', swapped, oldCa.cert), code('CA_ROTATION_UNTRUSTED_SIGNER'));
    // A bundle other than the phase's.
    assert.throws(() => checkCaRotation('c', { ...genuine, bundle: `${oldCa.cert}${newCa.cert}${intruder.cert}` }, oldCa.cert), code('CA_ROTATION_RECORD_INVALID'));
    // Signed for another cluster.
    assert.throws(() => checkCaRotation('other', genuine, oldCa.cert), code('CA_ROTATION_UNTRUSTED_SIGNER'));
  });

  it('refuses a replay of an earlier step once the old CA is dropped', () => {
    const trust = signedRecord('c', base(), 'trust', 'old', oldCa.key);
    assert.throws(() => checkCaRotation('c', trust, newCa.cert), code('CA_ROTATION_UNTRUSTED_SIGNER'));
  });

  it('rejects malformed records', () => {
    assert.throws(() => parseCaRotation('{'), code('CA_ROTATION_RECORD_INVALID'));
    const record = signedRecord('c', base(), 'trust', 'old', oldCa.key);
    assert.throws(() => parseCaRotation(JSON.stringify({ ...record, phase: 'later' })), code('CA_ROTATION_RECORD_INVALID'));
    assert.throws(() => checkCaRotation('c', { ...record, newCa: oldCa.cert, bundle: oldCa.cert }, oldCa.cert), code('CA_ROTATION_RECORD_INVALID'));
  });

  it('names the members that have not applied the current phase, with what they report', () => {
    const record = signedRecord('c', base(), 'reissue', 'new', newCa.key);
    const reports = new Map<string, CaRotationReport>([
      ['a', { id: 'r1', phase: 'reissue', applied: true, detail: 'ok' }],
      ['b', { id: 'r1', phase: 'trust', applied: true, detail: 'ok' }],
      ['c', { id: 'r1', phase: 'reissue', applied: false, detail: 'copy ca.next.key' }],
      ['d', { id: 'r0', phase: 'done', applied: true, detail: 'ok' }],
    ]);
    assert.deepEqual(pendingMembers(record, ['a', 'b', 'c', 'd', 'e'], reports), [
      { member: 'b', detail: 'still at trust' },
      { member: 'c', detail: 'copy ca.next.key' },
      { member: 'd', detail: 'no report yet' },
      { member: 'e', detail: 'no report yet' },
    ]);
  });

  it('the router rebuilds its TLS context when its certificate files change, and keeps the previous one while they do not match', async () => {
    const files = { cert: join(dir, 'router.crt'), key: join(dir, 'router.key') };
    const issue = async () => {
      writeFileSafely(files.key, newCa.key, { mode: 0o600 });
      writeFileSafely(files.cert, newCa.cert, { mode: 0o644 });
    };
    await issue();
    const pair = new CertFiles(files.cert, files.key);
    const first = pair.get();
    assert.equal(pair.get(), first, 'unchanged files: the same context');
    writeFileSafely(files.key, oldCa.key, { mode: 0o600 });
    assert.equal(pair.get(), first, 'a key without its certificate yet: the previous context');
    writeFileSafely(files.cert, oldCa.cert, { mode: 0o644 });
    assert.notEqual(pair.get(), first, 'a new pair: a new context');
  });

  it('checks an operator-provided new CA: a CA certificate, its own key, mode 0600', async () => {
    const file = (name: string, content: string, mode = 0o600) => {
      writeFileSafely(join(dir, name), content, { mode });
      return join(dir, name);
    };
    const cert = file('given.crt', newCa.cert, 0o644);
    assert.equal(providedCa({ phaseTimeoutMs: 1, newCaCert: cert, newCaKey: file('given.key', newCa.key) }).cert, newCa.cert);
    const refused = (options: { newCaCert: string; newCaKey?: string }, why: RegExp) =>
      assert.throws(() => providedCa({ phaseTimeoutMs: 1, ...options }), (e: { code?: string; message: string }) => e.code === 'CA_ROTATION_NEW_CA_INVALID' && why.test(e.message));
    refused({ newCaCert: cert }, /needs --new-ca-key/);
    refused({ newCaCert: cert, newCaKey: file('other.key', oldCa.key) }, /is not the key of/);
    refused({ newCaCert: cert, newCaKey: file('open.key', newCa.key, 0o644) }, /readable by group or others/);
    const leaf = await issueMemberCert({ keyFile: join(dir, 'given.key'), caCertFile: join(dir, 'old.crt'), caKeyFile: join(dir, 'old.key'), commonName: 'leaf', names: ['127.0.0.1'], days: 1 });
    refused({ newCaCert: file('leaf.crt', leaf, 0o644), newCaKey: join(dir, 'given.key') }, /one CA certificate/);
  });

  it('moves a CA directory through the phases: bundle, then the issuing key, then the new CA alone', () => {
    const caDir = mkdtempSync(join(dir, 'cadir-'));
    const files = { dir: caDir, cert: join(caDir, 'ca.crt'), key: join(caDir, 'ca.key') };
    writeFileSafely(files.cert, oldCa.cert, { mode: 0o644 });
    writeFileSafely(files.key, oldCa.key, { mode: 0o600 });
    const both = bundleFingerprints(`${oldCa.cert}${newCa.cert}`);
    assert.deepEqual(applyCaDir(files, signedRecord('c', base(), 'trust', 'old', oldCa.key)), { changed: true });
    assert.deepEqual(bundleFingerprints(readFileSync(files.cert, 'utf8')), both);
    // Reissue without the new key here: the agent waits and says what to copy.
    const reissue = signedRecord('c', base(), 'reissue', 'new', newCa.key);
    assert.match(applyCaDir(files, reissue).waiting ?? '', /copy ca\.next\.key/);
    writeFileSafely(nextKeyOf(files), newCa.key, { mode: 0o600 });
    assert.deepEqual(applyCaDir(files, reissue), { changed: true });
    assert.equal(issuerInBundle(readFileSync(files.cert, 'utf8'), readFileSync(files.key, 'utf8')), issuerInBundle(newCa.cert, newCa.key));
    assert.ok(!existsSync(nextKeyOf(files)));
    assert.deepEqual(applyCaDir(files, reissue), { changed: false }, 'a rerun changes nothing');
    assert.deepEqual(applyCaDir(files, signedRecord('c', base(), 'drop', 'new', newCa.key)), { changed: true });
    assert.deepEqual(bundleFingerprints(readFileSync(files.cert, 'utf8')), bundleFingerprints(newCa.cert));
  });
});
