/**
 * Issue 8, TLS by default and rotation, on real PostgreSQL 15 and real agents:
 * a client without TLS is refused; replication runs over TLS (pg_stat_ssl);
 * relevo's clients verify the server (a wrong CA is refused); the REST API
 * refuses plain HTTP and a client certificate from another CA; `relevo dsn`
 * prints verify-full strings; `relevo secrets rotate` under write load causes
 * no error, no failover, and replication reconnects with the new password;
 * no secret appears in any process's argv meanwhile; `relevo certs rotate`
 * changes every served certificate without a restart; `relevo certs rotate
 * --ca` replaces the CA under load with no failed verify-full connection and
 * resumes after an interruption.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { clusterKeys } from '../../src/cluster/keys.js';
import { loadCredentials } from '../../src/config/secrets.js';
import { localPostgres } from '../../src/postgres/local.js';
import { withConnection } from '../../src/postgres/sql.js';
import { apiCall, serverFingerprint } from '../../src/tls/client.js';
import { writeFileSafely } from '../../src/tls/files.js';
import { caFilesOf, memberTlsFiles } from '../../src/tls/member.js';
import { generateKeyPem, issueCaCert, issueMemberCert } from '../../src/tls/pki.js';
import { parseCaRotation, sharesCa, signedRecord, splitPem } from '../../src/tls/ca-rotation.js';
import { Etcd3 } from 'etcd3';
import { StoreConfigSchema } from '../../src/store/config.js';
import { openStore } from '../../src/store/open.js';
import { TestCluster } from '../helpers/cluster.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { freePorts } from '../helpers/ports.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { Writer } from '../helpers/writer.js';

const NAMES = ['node1', 'node2'];

/** Every process's argv, read repeatedly while `work` runs. */
async function sampleArgv<T>(work: () => Promise<T>): Promise<{ result: T; argv: Set<string> }> {
  const argv = new Set<string>();
  let running = true;
  const sampler = (async () => {
    while (running) {
      for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        try {
          argv.add(readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' '));
        } catch {
          // exited meanwhile
        }
      }
      await sleep(20);
    }
  })();
  try {
    return { result: await work(), argv };
  } finally {
    running = false;
    await sampler;
  }
}

describe('TLS by default, secret and certificate rotation', { timeout: 300_000 }, () => {
  let cluster: TestCluster;
  let primary: string;
  let replica: string;
  let foreign: { dir: string; caFile: string; cert: string; key: string };
  let routerPort: number;

  before(async () => {
    cluster = await TestCluster.create({ store: 'embedded', settings: { loopWaitMs: 300, ttlMs: 5_000 } });
    routerPort = (await freePorts(1))[0]!;
    // node1's agent runs the router; it relays TLS end to end (members and router share 127.0.0.1, a name in every certificate).
    await cluster.defineMember('node1', { router: { embedded: true, listen: { readWrite: `127.0.0.1:${routerPort}`, readOnly: null } } });
    await cluster.defineMember('node2');
    for (const name of NAMES) cluster.startAgent(name);
    // Another CA and a client certificate from it: what an attacker could make.
    const dir = mkdtempSync(join(tmpdir(), 'relevo-foreign-ca-'));
    writeFileSafely(join(dir, 'ca.key'), generateKeyPem(), { mode: 0o600 });
    writeFileSafely(join(dir, 'ca.crt'), await issueCaCert(join(dir, 'ca.key'), 'foreign'), { mode: 0o644 });
    writeFileSafely(join(dir, 'client.key'), generateKeyPem(), { mode: 0o600 });
    const cert = await issueMemberCert({ keyFile: join(dir, 'client.key'), caCertFile: join(dir, 'ca.crt'), caKeyFile: join(dir, 'ca.key'), commonName: 'intruder', names: ['127.0.0.1'], days: 2 });
    foreign = { dir, caFile: join(dir, 'ca.crt'), cert, key: readFileSync(join(dir, 'client.key'), 'utf8') };
  });

  after(async () => {
    await cluster?.destroy();
    if (foreign) rmSync(foreign.dir, { recursive: true, force: true });
  });

  it('bootstraps with a cluster CA and a certificate per member, no secret in any argv during bootstrap and clone', async () => {
    const { result: members, argv } = await sampleArgv(() => cluster.waitHealthy(NAMES));
    const credentials = loadCredentials(cluster.member('node1').config)!;
    assert.deepEqual([...argv].filter((line) => line.includes(credentials.agentPassword) || line.includes(credentials.replicationPassword)), []);
    assert.ok([...argv].some((line) => line.includes('pg_basebackup')), 'the clone was sampled');
    primary = members.find((m) => m.role === 'primary')!.name;
    replica = members.find((m) => m.role === 'replica')!.name;
    const config = cluster.member(primary).config;
    const published = await cluster.store.get(clusterKeys(cluster.clusterName).ca);
    assert.equal(published?.value.replace(/\s/g, ''), readFileSync(caFilesOf(config).cert, 'utf8').replace(/\s/g, ''), 'the store holds the CA certificate');
    for (const kv of await cluster.store.list(clusterKeys(cluster.clusterName).root)) assert.ok(!kv.value.includes('PRIVATE KEY'), `${kv.key} holds a private key`);
    for (const name of NAMES) {
      const files = memberTlsFiles(cluster.member(name).config)!;
      assert.match(readFileSync(files.cert, 'utf8'), /BEGIN CERTIFICATE/);
    }
    const hba = readFileSync(join(config.postgres.dataDir, 'pg_hba.conf'), 'utf8');
    assert.match(hba, /^hostssl\s+all\s+all\s+\S+\s+scram-sha-256$/m);
    // Plain `host` lines only reject (the superuser roles, with or without TLS).
    assert.deepEqual(hba.split('\n').filter((l) => /^host\s/.test(l) && !l.endsWith('reject')), []);
  });

  it('refuses a client without TLS on a network address', async () => {
    const { config } = cluster.member(primary);
    const credentials = loadCredentials(config)!;
    const client = new pg.Client({ host: config.postgres.listen, port: config.postgres.port, user: 'relevo_remote', password: credentials.agentPassword, database: 'postgres', ssl: false });
    await assert.rejects(client.connect(), /no pg_hba.conf entry .*no encryption/);
  });

  it('streams replication over TLS, and relevo clients verify the server', async () => {
    const rows = await cluster.sql<{ application_name: string; ssl: boolean; version: string }>(
      primary,
      'SELECT r.application_name, s.ssl, s.version FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid',
    );
    assert.deepEqual(rows.map((r) => [r.application_name, r.ssl]), [[replica, true]]);
    const { config } = cluster.member(primary);
    const credentials = loadCredentials(config)!;
    const target = { host: config.postgres.listen, port: config.postgres.port, user: 'relevo_remote', password: credentials.agentPassword };
    const cipher = await withConnection({ ...target, tlsCaFile: caFilesOf(config).cert }, async (c) => (await c.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows[0]!.ssl);
    assert.equal(cipher, true);
    await assert.rejects(withConnection({ ...target, tlsCaFile: foreign.caFile }, async (c) => c.query('SELECT 1')), /self[- ]signed|unable to verify|certificate/i);
  });

  it('has no superuser on the network: relevo_remote holds only grants, and an older cluster is migrated at agent start', async () => {
    const { config } = cluster.member(primary);
    const credentials = loadCredentials(config)!;
    const over = (user: string) => ({ host: config.postgres.listen, port: config.postgres.port, user, password: credentials.agentPassword, tlsCaFile: caFilesOf(config).cert });
    // The agent's superuser role exists only on the local socket.
    await assert.rejects(withConnection(over('relevo'), (c) => c.query('SELECT 1')), /pg_hba\.conf rejects connection .*user "relevo"/);
    const checkNetworkRole = () =>
      withConnection(over('relevo_remote'), async (c) => {
        const me = (await c.query<{ rolsuper: boolean; rolreplication: boolean }>('SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user')).rows[0]!;
        // What pg_rewind reads on its source, and the CHECKPOINT relevo runs before a rewind.
        const control = (await c.query<{ n: number }>(`SELECT length(pg_read_binary_file('global/pg_control')) AS n`)).rows[0]!.n;
        await c.query('CHECKPOINT');
        await assert.rejects(c.query('CREATE ROLE intruder SUPERUSER'), /permission denied|must be superuser/);
        await assert.rejects(c.query(`SELECT pg_read_file('postgresql.conf')`), /permission denied/);
        return { ...me, control: control > 0 };
      });
    assert.deepEqual(await checkNetworkRole(), { rolsuper: false, rolreplication: false, control: true });
    const supers = await cluster.sql<{ rolname: string }>(primary, 'SELECT rolname FROM pg_roles WHERE rolsuper ORDER BY 1');
    assert.deepEqual(supers.map((r) => r.rolname), ['postgres', 'relevo'], 'the only superusers are the local-only ones');

    // An existing cluster from before the network role: no relevo_remote. The agent that runs the primary creates it when it starts.
    await cluster.sql(primary, 'DROP SCHEMA _relevo CASCADE');
    await cluster.sql(primary, 'DROP OWNED BY relevo_remote');
    await cluster.sql(primary, 'DROP ROLE relevo_remote');
    await assert.rejects(withConnection(over('relevo_remote'), (c) => c.query('SELECT 1')), /password authentication failed|does not exist/);
    // Stopping the agent stops its PostgreSQL and hands the lease over: whichever agent runs the primary next migrates.
    const before = primary;
    await cluster.signalAgent(primary, 'SIGTERM');
    cluster.startAgent(before);
    const members = await cluster.waitHealthy(NAMES);
    primary = members.find((m) => m.role === 'primary')!.name;
    replica = members.find((m) => m.role === 'replica')!.name;
    await waitFor('the agent to recreate the network role', async () => (await cluster.sql(primary, `SELECT 1 FROM pg_roles WHERE rolname = 'relevo_remote'`)).length === 1, 30_000, 200);
    const next = cluster.member(primary).config;
    const remote = { host: next.postgres.listen, port: next.postgres.port, user: 'relevo_remote', password: credentials.agentPassword, tlsCaFile: caFilesOf(next).cert };
    assert.equal(await withConnection(remote, async (c) => (await c.query<{ s: boolean }>('SELECT rolsuper AS s FROM pg_roles WHERE rolname = current_user')).rows[0]!.s), false);
  });

  it('serves the API over HTTPS only; a client certificate from another CA is refused', async () => {
    const { config } = cluster.member(primary);
    assert.equal((await cluster.api(primary, '/status')).status, 200);
    await assert.rejects(apiCall(`http://${config.api.listen}/status`, { timeoutMs: 5_000 }), 'plain HTTP gets no answer');
    const ca = readFileSync(caFilesOf(config).cert, 'utf8');
    // No Basic credentials configured and no certificate: state-changing calls are refused.
    assert.equal((await cluster.api(primary, '/pause', { method: 'POST' })).status, 403);
    await assert.rejects(cluster.api(primary, '/pause', { method: 'POST', tls: { ca, cert: foreign.cert, key: foreign.key } }), /socket hang up|ECONNRESET|EPIPE|closed/i);
    // The server itself is verified: a client trusting only another CA refuses it.
    await assert.rejects(cluster.api(primary, '/status', { tls: { ca: readFileSync(foreign.caFile, 'utf8') } }), /self[- ]signed|unable to verify|certificate/i);
    // A member certificate (signed by the cluster CA) authenticates.
    const files = memberTlsFiles(cluster.member(replica).config)!;
    const own = { ca, cert: readFileSync(files.cert, 'utf8'), key: readFileSync(files.key, 'utf8') };
    assert.equal((await cluster.api(primary, '/pause', { method: 'POST', tls: own })).status, 202);
    assert.equal((await cluster.api(primary, '/resume', { method: 'POST', tls: own })).status, 202);
  });

  it('relays TLS end to end through the router: verify-full against the member certificate', async () => {
    const { config } = cluster.member(primary);
    const credentials = loadCredentials(config)!;
    const row = await waitFor('a verified TLS session through the router', () =>
      withConnection({ host: '127.0.0.1', port: routerPort, user: 'relevo_remote', password: credentials.agentPassword, tlsCaFile: caFilesOf(config).cert }, async (c) =>
        (await c.query<{ ssl: boolean; port: number }>('SELECT ssl, current_setting(\'port\')::int AS port FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows[0],
      ), 20_000);
    assert.deepEqual(row, { ssl: true, port: config.postgres.port });
  });

  it('prints verify-full connection strings and the CA path', async () => {
    const { code, stdout } = await cluster.cli(['dsn'], primary);
    assert.equal(code, 0);
    const caFile = caFilesOf(cluster.member(primary).config).cert;
    assert.ok(stdout.includes(`CA certificate: ${caFile}`), stdout);
    assert.match(stdout, /read-write \(libpq\): postgresql:\/\/.*sslmode=verify-full&sslrootcert=/);
  });

  it('rotates the role passwords under write load: no error, no failover, replication reconnects, old password refused, nothing in argv', async () => {
    await cluster.sql(primary, `CREATE ROLE app LOGIN PASSWORD 'app-password'; GRANT CREATE ON SCHEMA public TO app`);
    // Synchronous mode: commits wait while the killed walsender's replica reconnects; that wait is not an error.
    const writer = Writer.forCluster(cluster, 'rotation_load', { user: 'app', password: 'app-password', intervalMs: 5, queryTimeoutMs: 30_000 });
    await writer.start();
    await writer.waitForAcks(20);
    const before = loadCredentials(cluster.member(primary).config)!;
    const historyBefore = (await cluster.cli(['history', '--json'], primary)).stdout;
    const rotationStarted = Date.now();
    const { result, argv } = await sampleArgv(async () => {
      const passfiles = NAMES.map((name) => localPostgres(cluster.member(name).config).passfile);
      const oldPassfiles = passfiles.map((file) => readFileSync(file, 'utf8'));
      const rotated = await cluster.cli(['secrets', 'rotate'], replica);
      // Each agent rewrites its passfile; then the walreceiver must reconnect with the new password.
      await waitFor('every agent rewrote its passfile', () => passfiles.every((file, i) => readFileSync(file, 'utf8') !== oldPassfiles[i]), 30_000);
      await cluster.sql(primary, `SELECT pg_terminate_backend(pid) FROM pg_stat_replication`);
      await waitFor('replication streaming again after the walsender was killed', async () => {
        const rows = await cluster.sql<{ ssl: boolean }>(primary, `SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.state = 'streaming'`);
        return rows.length === 1 && rows[0]!.ssl;
      }, 30_000);
      return rotated;
    });
    assert.equal(result.code, 0, result.stderr);
    const acked = writer.acknowledged;
    await writer.waitForAcks(acked + 20);
    await writer.stop();
    // (Before, the writer may have tried the replica first: "not read-write" is how it finds the primary.)
    assert.deepEqual(writer.failures.filter((f) => f.at >= rotationStarted), [], `the writer saw no error; ${NAMES.map((n) => `${n}:\n${cluster.logTail(n, 30)}`).join('\n')}`);
    const after = loadCredentials(cluster.member(primary).config)!;
    assert.notEqual(after.agentPassword, before.agentPassword);
    assert.notEqual(after.replicationPassword, before.replicationPassword);
    assert.equal((await cluster.cli(['history', '--json'], primary)).stdout, historyBefore, 'no failover');
    const members = await cluster.waitHealthy(NAMES, 30_000);
    assert.equal(members.find((m) => m.role === 'primary')!.name, primary);
    const { config } = cluster.member(primary);
    const tlsCaFile = caFilesOf(config).cert;
    for (const [user, password] of [['relevo_remote', before.agentPassword], ['replicator', before.replicationPassword]] as const) {
      await assert.rejects(withConnection({ host: config.postgres.listen, port: config.postgres.port, user, password, tlsCaFile }, async (c) => c.query('SELECT 1')), /password authentication failed/);
    }
    await withConnection({ host: config.postgres.listen, port: config.postgres.port, user: 'replicator', password: after.replicationPassword, tlsCaFile }, async (c) => c.query('SELECT 1'));
    await withConnection({ host: config.postgres.listen, port: config.postgres.port, user: 'relevo_remote', password: after.agentPassword, tlsCaFile }, async (c) => c.query('SELECT 1'));
    // The local superuser role got the new password too (its only way in is the socket).
    await withConnection({ host: config.postgres.socketDir!, port: config.postgres.port, user: 'relevo', password: after.agentPassword }, async (c) => c.query('SELECT 1'));
    const secrets = [before.agentPassword, before.replicationPassword, after.agentPassword, after.replicationPassword];
    const leaked = [...argv].filter((line) => secrets.some((s) => line.includes(s)));
    assert.ok(argv.size > 10, `sampled ${argv.size} command lines`);
    assert.deepEqual(leaked, [], 'no secret in any argv');
    const verified = await writer.verify(cluster);
    assert.deepEqual(verified.lost, []);
  });

  it('rotates member certificates without a restart or a failover', async () => {
    const { config } = cluster.member(primary);
    const ca = readFileSync(caFilesOf(config).cert, 'utf8');
    const pidBefore = cluster.postmasterPid(primary);
    const before = await serverFingerprint(config.postgres.listen, config.postgres.port, ca, true);
    const historyBefore = (await cluster.cli(['history', '--json'], primary)).stdout;
    const rotated = await cluster.cli(['certs', 'rotate'], primary);
    assert.equal(rotated.code, 0, rotated.stderr);
    for (const name of NAMES) assert.match(rotated.stdout, new RegExp(`${name}: new certificate .* PostgreSQL and the API`));
    assert.notEqual(await serverFingerprint(config.postgres.listen, config.postgres.port, ca, true), before);
    assert.equal(cluster.postmasterPid(primary), pidBefore, 'PostgreSQL was reloaded, not restarted');
    assert.equal((await cluster.cli(['history', '--json'], primary)).stdout, historyBefore, 'no failover');
    // Replication still runs over TLS with the new certificates (a fresh connection verifies them).
    await cluster.sql(primary, `SELECT pg_terminate_backend(pid) FROM pg_stat_replication`);
    await cluster.waitHealthy(NAMES, 30_000);
    assert.equal((await cluster.api(replica, '/status')).status, 200);
  });

  it('rotates the CA: no failed verify-full connection, replication never breaks, an interrupted run resumes, the old CA verifies nothing after, a forged record is refused', async () => {
    const { config } = cluster.member(primary);
    const caFile = caFilesOf(config).cert;
    const oldCa = readFileSync(caFile, 'utf8');
    const walsender = async () => (await cluster.sql<{ pid: number }>(primary, `SELECT pid FROM pg_stat_replication WHERE state = 'streaming'`)).map((r) => r.pid);
    // The case before killed the walsender: the status record may still say streaming while the replica reconnects.
    const streamBefore = await waitFor('one streaming walsender on the primary', async () => {
      const pids = await walsender();
      return pids.length === 1 ? pids : undefined;
    }, 30_000);
    const writer = Writer.forCluster(cluster, 'ca_rotation_load', { user: 'app', password: 'app-password', intervalMs: 5, queryTimeoutMs: 30_000 });
    await writer.start();
    await writer.waitForAcks(20);
    const started = Date.now();
    // The writer keeps its session; fresh verify-full connections all along prove verification: each member's
    // PostgreSQL and API, and the router, each trusting the CA file as it is at that moment (as libpq rereads sslrootcert).
    const probeFailures: string[] = [];
    let probes = 0;
    let probing = true;
    const probe = (async () => {
      while (probing) {
        for (const name of NAMES) {
          const member = cluster.member(name).config;
          const attempts: [string, () => Promise<unknown>][] = [
            [`${name} postgres`, () => withConnection({ host: member.postgres.listen, port: member.postgres.port, user: 'app', password: 'app-password', tlsCaFile: caFile }, (c) => c.query('SELECT 1'))],
            [`${name} api`, async () => assert.equal((await cluster.api(name, '/status')).status < 500, true)],
          ];
          if (name === 'node1') attempts.push(['router', () => withConnection({ host: '127.0.0.1', port: routerPort, user: 'app', password: 'app-password', tlsCaFile: caFile }, (c) => c.query('SELECT 1'))]);
          for (const [what, attempt] of attempts) {
            probes++;
            await attempt().catch((error: Error) => probeFailures.push(`${new Date().toISOString()} ${what}: ${error.message}`));
          }
        }
        await sleep(50);
      }
    })();
    const keys = clusterKeys(cluster.clusterName);
    // Interrupted: the replica's agent is frozen for the first run (shorter than the lease), so `trust` times out.
    await cluster.signalAgent(replica, 'SIGSTOP');
    const first = await cluster.cli(['certs', 'rotate', '--ca', '--phase-timeout', '1'], primary).finally(() => cluster.signalAgent(replica, 'SIGCONT'));
    assert.notEqual(first.code, 0, first.stdout);
    assert.match(first.stderr, new RegExp(`${replica} \\(no report yet\\).*\\[CA_ROTATION_TIMEOUT\\]`));
    const interrupted = parseCaRotation((await cluster.store.get(keys.caRotation))!.value);
    assert.equal(interrupted.phase, 'trust');
    const second = await cluster.cli(['certs', 'rotate', '--ca'], primary);
    probing = false;
    await probe;
    assert.equal(second.code, 0, `${second.stderr}\n${NAMES.map((n) => `${n}:\n${cluster.logTail(n, 20)}`).join('\n')}`);
    assert.match(second.stdout, new RegExp(`resuming CA rotation ${interrupted.id} at phase ${interrupted.phase}`));
    assert.match(second.stdout, /the old CA verifies none of 2 member/);
    const acked = writer.acknowledged;
    await writer.waitForAcks(acked + 20);
    await writer.stop();
    assert.deepEqual(probeFailures, [], `${probes} probes`);
    assert.ok(probes > 30, `only ${probes} probes ran`);
    assert.deepEqual(writer.failures.filter((f) => f.at >= started), [], 'the writer saw no error');
    assert.deepEqual(await walsender(), streamBefore, 'the same walsender on the same primary streamed throughout: replication never broke, no failover');
    // Only the new CA is trusted, and the old one verifies no member's PostgreSQL or API any more.
    const newCa = readFileSync(caFile, 'utf8');
    assert.equal(splitPem(newCa).length, 1);
    assert.ok(!sharesCa(newCa, oldCa));
    assert.ok(sharesCa((await cluster.store.get(keys.ca))!.value, newCa), 'the store publishes the new CA');
    for (const name of NAMES) {
      const member = cluster.member(name).config;
      assert.ok(sharesCa(readFileSync(memberTlsFiles(member)!.caCert, 'utf8'), newCa) && splitPem(readFileSync(memberTlsFiles(member)!.caCert, 'utf8')).length === 1);
      await assert.rejects(serverFingerprint(member.postgres.listen, member.postgres.port, oldCa, true), /self[- ]signed|unable to verify|certificate/i);
      await assert.rejects(serverFingerprint('127.0.0.1', Number(member.api.listen.split(':')[1]), oldCa, false), /self[- ]signed|unable to verify|certificate/i);
      await serverFingerprint(member.postgres.listen, member.postgres.port, newCa, true);
    }
    // A fresh replication connection verifies the new certificate with the new CA alone.
    await cluster.sql(primary, `SELECT pg_terminate_backend(pid) FROM pg_stat_replication`);
    await cluster.waitHealthy(NAMES, 30_000);
    assert.deepEqual((await writer.verify(cluster)).lost, []);
    // A store writer cannot introduce its own CA: a record signed with its key is refused and reported, never applied.
    const forged = signedRecord(cluster.clusterName, { id: 'forged', oldCa: newCa, newCa: readFileSync(foreign.caFile, 'utf8'), startedAt: new Date().toISOString() }, 'trust', 'new', readFileSync(join(foreign.dir, 'ca.key'), 'utf8'));
    await cluster.store.put(keys.caRotation, JSON.stringify(forged));
    for (const name of NAMES) {
      await waitFor(`${name} to refuse the forged CA rotation`, async () => (await cluster.store.get(keys.caRotationReport(name)))?.value.includes('CA_ROTATION_UNTRUSTED_SIGNER'), 10_000, 100);
    }
    assert.equal(readFileSync(caFile, 'utf8'), newCa, 'ca.crt unchanged');
    await cluster.store.delete(keys.caRotation);
  });
});

describe('etcd over TLS with a client certificate and a password', { timeout: 120_000 }, () => {
  let dir: string;
  let etcd: EtcdProcess | undefined;
  let files: { ca: string; cert: string; key: string; passwordFile: string };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'relevo-etcd-tls-'));
    const file = (name: string) => join(dir, name);
    writeFileSafely(file('ca.key'), generateKeyPem(), { mode: 0o600 });
    writeFileSafely(file('ca.crt'), await issueCaCert(file('ca.key'), 'etcd'), { mode: 0o644 });
    for (const name of ['server', 'client']) {
      writeFileSafely(file(`${name}.key`), generateKeyPem(), { mode: 0o600 });
      const pem = await issueMemberCert({ keyFile: file(`${name}.key`), caCertFile: file('ca.crt'), caKeyFile: file('ca.key'), commonName: name, names: ['127.0.0.1'], days: 2 });
      writeFileSafely(file(`${name}.crt`), pem, { mode: 0o644 });
    }
    writeFileSafely(file('etcd.password'), 'etcd-root-password\n', { mode: 0o600 });
    files = { ca: file('ca.crt'), cert: file('client.crt'), key: file('client.key'), passwordFile: file('etcd.password') };
    const pem = (name: string) => readFileSync(file(name), 'utf8');
    etcd = await startEtcd({ tls: { certFile: file('server.crt'), keyFile: file('server.key'), caFile: files.ca, client: { ca: pem('ca.crt'), cert: pem('client.crt'), key: pem('client.key') } } });
    // Authentication on, with a root user (etcd's own API through the same TLS client).
    const admin = new Etcd3({ hosts: etcd.endpoints, credentials: { rootCertificate: Buffer.from(pem('ca.crt')), certChain: Buffer.from(pem('client.crt')), privateKey: Buffer.from(pem('client.key')) } });
    try {
      await admin.user('root').create('etcd-root-password');
      await admin.user('root').addRole('root');
      await admin.auth.authEnable();
    } finally {
      admin.close();
    }
  });

  after(async () => {
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const config = (overrides: Partial<{ tls: { ca: string; cert?: string; key?: string }; passwordFile: string }>) =>
    StoreConfigSchema.parse({ backend: 'etcd', endpoints: etcd!.endpoints, timeoutMs: 1_500, username: 'root', passwordFile: files.passwordFile, tls: { ca: files.ca, cert: files.cert, key: files.key }, ...overrides });

  it('works with the CA, the client certificate and the password', async () => {
    const store = await openStore(config({}));
    try {
      await store.put('/relevo/tls-check', 'ok');
      assert.equal((await store.get('/relevo/tls-check'))?.value, 'ok');
    } finally {
      await store.close();
    }
  });

  it('fails without the client certificate, with a wrong password, or trusting another CA', async () => {
    writeFileSafely(join(dir, 'wrong.password'), 'not-it\n', { mode: 0o600 });
    const otherCa = join(dir, 'other-ca.crt');
    writeFileSafely(join(dir, 'other.key'), generateKeyPem(), { mode: 0o600 });
    writeFileSafely(otherCa, await issueCaCert(join(dir, 'other.key'), 'other'), { mode: 0o644 });
    for (const bad of [config({ tls: { ca: files.ca } }), config({ passwordFile: join(dir, 'wrong.password') }), config({ tls: { ca: otherCa, cert: files.cert, key: files.key } })]) {
      const store = await openStore(bad);
      try {
        await assert.rejects(store.get('/relevo/tls-check'));
      } finally {
        await store.close();
      }
    }
  });
});
