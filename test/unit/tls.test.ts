import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseAllowlist } from '../../src/api/server.js';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { parseMemberConfig } from '../../src/config/load.js';
import { apiUrlOf } from '../../src/config/member.js';
import { baseParameters, renderHba, renderRelevoConf } from '../../src/postgres/conf.js';
import { ensurePrivateDir, writeFileSafely } from '../../src/tls/files.js';
import { memberCertNames } from '../../src/tls/member.js';
import { certFacts, generateKeyPem, issueCaCert, issueMemberCert, issuedBy, needsRenewal } from '../../src/tls/pki.js';

const member = (extra = '') =>
  parseMemberConfig(
    `cluster: c\nname: db1\nstore: { backend: embedded, path: /tmp/x.db }\npostgres: { dataDir: /pg/db1, listen: 10.0.0.11, connectAddress: "db1.example:5432" }\napi: { listen: "10.0.0.11:8008" }\nsecrets: { file: /etc/relevo/secrets.yaml }\n${extra}`,
    'db1.yaml',
  );

describe('TLS configuration of PostgreSQL', () => {
  it('turns ssl on with the member files, hostssl network rules, verify-full replication', () => {
    const config = member();
    const parameters = baseParameters(config, defaultClusterSettings());
    assert.equal(parameters.ssl, 'on');
    assert.equal(parameters.ssl_cert_file, '/pg/db1.tls/server.crt');
    assert.equal(parameters.ssl_key_file, '/pg/db1.tls/server.key');
    const hba = renderHba(defaultClusterSettings(), true);
    // Only the superusers' reject lines are plain host (they match TCP with or without TLS).
    assert.doesNotMatch(hba.split('\n').filter((l) => !l.endsWith('reject')).join('\n'), /^host\s/m);
    assert.match(hba, /^hostssl replication\s+replicator\s+\S+\s+scram-sha-256$/m);
    assert.match(hba, /^local\s+all\s+postgres\s+peer$/m);
    const conf = renderRelevoConf(parameters, { upstream: { address: 'db2.example:5432', slot: 'db1' }, passfile: '/pg/db1.pgpass', sslRootCert: '/pg/db1.tls/ca.crt' }, 'db1');
    assert.match(conf, /primary_conninfo = '.*sslmode=verify-full sslrootcert=\/pg\/db1\.tls\/ca\.crt channel_binding=require'/);
  });

  it('keeps plain host rules and sslmode=prefer with tls.enabled: false', () => {
    const config = member('tls: { enabled: false }');
    assert.equal(baseParameters(config, defaultClusterSettings()).ssl, undefined);
    assert.match(renderHba(defaultClusterSettings(), false), /^host\s+all\s+all/m);
    assert.equal(apiUrlOf(config), 'http://10.0.0.11:8008');
    assert.equal(apiUrlOf(member()), 'https://10.0.0.11:8008');
  });

  it('names the connect address, listen addresses and the API host in the certificate, never a wildcard', () => {
    assert.deepEqual(memberCertNames(member('tls: { extraNames: [router.example] }')), ['db1.example', '10.0.0.11', 'router.example']);
    const wild = parseMemberConfig(
      'cluster: c\nname: db1\nstore: { backend: embedded, path: /tmp/x.db }\npostgres: { dataDir: /pg/db1, listen: "0.0.0.0", connectAddress: "10.0.0.11:5432" }\napi: { listen: "[::1]:8008" }\nsecrets: { file: /s.yaml }\n',
      'x.yaml',
    );
    assert.deepEqual(memberCertNames(wild), ['10.0.0.11', '::1']);
  });

  it('refuses half a pre-issued certificate', () => {
    assert.throws(() => member('tls: { cert: /etc/relevo/db1.crt }'), /tls\.cert and tls\.key/);
  });
});

describe('certificates', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'relevo-pki-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('issues a member certificate the CA verifies, and knows when to renew it', async () => {
    const file = (n: string) => join(dir, n);
    writeFileSafely(file('ca.key'), generateKeyPem(), { mode: 0o600 });
    const ca = await issueCaCert(file('ca.key'), 'c');
    writeFileSafely(file('ca.crt'), ca, { mode: 0o644 });
    writeFileSafely(file('m.key'), generateKeyPem(), { mode: 0o600 });
    const cert = await issueMemberCert({ keyFile: file('m.key'), caCertFile: file('ca.crt'), caKeyFile: file('ca.key'), commonName: 'db1.c', names: ['10.0.0.11', 'db1.example'], days: 30 });
    assert.ok(issuedBy(cert, ca));
    assert.deepEqual(certFacts(cert).names, ['10.0.0.11', 'db1.example']);
    assert.equal(needsRenewal(cert, ca, ['10.0.0.11', 'db1.example'], new Date()), undefined);
    assert.match(needsRenewal(cert, ca, ['10.0.0.12'], new Date()) ?? '', /lacks 10\.0\.0\.12/);
    assert.match(needsRenewal(cert, ca, [], new Date(Date.now() + 25 * 86400_000)) ?? '', /expires/);
    writeFileSafely(file('other.key'), generateKeyPem(), { mode: 0o600 });
    const other = await issueCaCert(file('other.key'), 'other');
    assert.equal(needsRenewal(cert, other, [], new Date()), 'not signed by the cluster CA');
    assert.doesNotMatch(readFileSync(file('ca.crt'), 'utf8'), /PRIVATE/);
  });
});

describe('api.allowlist', () => {
  it('accepts addresses and CIDRs, refuses anything else', () => {
    const list = parseAllowlist(['10.0.0.0/8', '192.168.1.5', '::1'])!;
    assert.ok(list.check('10.1.2.3', 'ipv4'));
    assert.ok(list.check('192.168.1.5', 'ipv4'));
    assert.ok(!list.check('192.168.1.6', 'ipv4'));
    assert.equal(parseAllowlist([]), undefined);
    for (const bad of ['10.0.0.0/33', 'example.com', '10.0.0.0/8/1', '0.0.0.0/0 trust']) assert.throws(() => parseAllowlist([bad]), /api\.allowlist/);
  });
});

describe('ensurePrivateDir (the cluster CA directory)', () => {
  let scratch: string;
  before(() => {
    scratch = mkdtempSync(join(tmpdir(), 'relevo-private-dir-'));
  });
  after(() => rmSync(scratch, { recursive: true, force: true }));

  it('creates an absent directory with the mode asked for', () => {
    const dir = join(scratch, 'fresh');
    ensurePrivateDir(dir, 0o700);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
  });

  it('accepts a directory another agent already made (the EEXIST path two agents starting at once take)', () => {
    const dir = join(scratch, 'made-by-another');
    mkdirSync(dir, { mode: 0o700 });
    assert.doesNotThrow(() => ensurePrivateDir(dir, 0o700));
    assert.doesNotThrow(() => ensurePrivateDir(dir, 0o700));
  });

  it('refuses a symbolic link or a group-writable directory in its place with UNSAFE_PATH', () => {
    const target = join(scratch, 'target');
    mkdirSync(target, { mode: 0o700 });
    const link = join(scratch, 'link');
    symlinkSync(target, link);
    assert.throws(() => ensurePrivateDir(link, 0o700), { code: 'UNSAFE_PATH', message: /not a directory/ });
    const open = join(scratch, 'group-writable');
    mkdirSync(open);
    chmodSync(open, 0o770);
    assert.throws(() => ensurePrivateDir(open, 0o700), { code: 'UNSAFE_PATH', message: /writable by group or others/ });
  });
});
