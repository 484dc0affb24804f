/**
 * Issue 8 (security), the parts that are not TLS, on real files, processes and
 * PostgreSQL, as root (the agent's documented privileged mode):
 *  - a symbolic link the postgres OS user plants in place of pg_hba.conf,
 *    relevo.conf, the passfile or the data directory is refused, and its
 *    root-owned target stays byte-identical and root-owned;
 *  - only directories relevo creates are chowned;
 *  - `trust` cannot be injected through allowedNetworks, nor the rules bypassed
 *    through hba_file, at `config set` and at `config check`;
 *  - no secret appears in any process's argv (/proc/PID/cmdline sampled during
 *    bootstrap, clone and rewind) nor in the agents' or PostgreSQL's logs.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { chmodSync, chownSync, linkSync, lchownSync, mkdirSync, renameSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tcpConnect, type Socket } from 'node:net';
import { promisify } from 'node:util';
import pg from 'pg';
import { clusterKeys } from '../../src/cluster/keys.js';
import { ClusterSettingsSchema } from '../../src/cluster/settings.js';
import { loadCredentials } from '../../src/config/secrets.js';
import { writeMemberConfiguration, writePassfile } from '../../src/postgres/conf.js';
import { ensureOwnedDir, removeOwnedTree, UnsafePathError } from '../../src/postgres/owned-fs.js';
import { startRouter, type RouterHandle } from '../../src/router/index.js';
import { EmbeddedStore } from '../../src/store/embedded.js';
import { lookupOsUser, runningAsRoot } from '../../src/util/os-user.js';
import { FAULT_TEST_SETTINGS, MAIN, TestCluster } from '../helpers/cluster.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { Faults } from '../helpers/faults.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';
import { member } from '../unit/observations.js';

const execFileAsync = promisify(execFile);
const asRoot = { skip: runningAsRoot() ? false : 'needs root: the escalation only exists when the agent runs as root' };

async function relevo(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, [MAIN, ...args], { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** A root-owned 0600 file the attacker wants: its bytes, owner and mode must not change. */
function rootTarget(dir: string, name: string): { path: string; check(): void } {
  const path = join(dir, name);
  const content = `root's own ${name}\n`;
  writeFileSync(path, content, { mode: 0o600 });
  return {
    path,
    check() {
      const s = statSync(path);
      assert.equal(readFileSync(path, 'utf8'), content, `${path} byte-identical`);
      assert.equal(s.uid, 0, `${path} still owned by root`);
      assert.equal(s.mode & 0o777, 0o600, `${path} still mode 0600`);
    },
  };
}

/** What the postgres OS user can do in its own directory: replace a file with a link. */
function plantLink(link: string, target: string, uid: number, gid: number): void {
  rmSync(link, { force: true });
  symlinkSync(target, link);
  lchownSync(link, uid, gid);
}

describe('PostgreSQL-owned files (as root)', asRoot, () => {
  const pg = runningAsRoot() ? lookupOsUser('postgres') : { name: 'postgres', uid: 0, gid: 0, home: '/' };
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'relevo-sec-'));
    // As on a real host, postgres may traverse the ancestors of its directories.
    chmodSync(dir, 0o755);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const settings = ClusterSettingsSchema.parse({});
  const dataDir = () => join(dir, 'pg', 'data');

  it('creates missing directories for postgres, and chowns no directory it did not create', () => {
    const existing = join(dir, 'existing-run');
    mkdirSync(existing, { mode: 0o755 });
    ensureOwnedDir(existing, pg, 0o755, 'shared');
    assert.equal(statSync(existing).uid, 0, 'an existing socket directory is not chowned');
    ensureOwnedDir(join(existing, 'sub'), pg, 0o755, 'shared');
    assert.equal(statSync(existing).uid, 0, "a created directory's existing parent is not chowned");
    assert.equal(statSync(join(existing, 'sub')).uid, pg.uid, 'the directory relevo created belongs to postgres');

    ensureOwnedDir(dirname(dataDir()), pg, 0o755);
    ensureOwnedDir(dataDir(), pg, 0o700);
    assert.equal(statSync(dir).uid, 0, 'the pre-existing parent stays root-owned');
    assert.equal(statSync(dataDir()).uid, pg.uid);
    assert.equal(statSync(dataDir()).mode & 0o777, 0o700);

    // A data directory somebody else owns, or one others may write, is refused, not taken over.
    const foreign = join(dir, 'foreign-data');
    mkdirSync(foreign, { mode: 0o700 });
    assert.throws(() => ensureOwnedDir(foreign, pg, 0o700), (e: unknown) => e instanceof UnsafePathError && e.code === 'UNSAFE_PATH_OWNER' && e.message.includes(foreign) && /chown postgres/.test(e.message));
    assert.equal(statSync(foreign).uid, 0);
    const open = join(dir, 'open-run');
    mkdirSync(open);
    chmodSync(open, 0o777);
    assert.throws(() => ensureOwnedDir(open, pg, 0o755, 'shared'), (e: unknown) => e instanceof UnsafePathError && e.code === 'UNSAFE_PATH_MODE');
  });

  it('writes pg_hba.conf and relevo.conf as postgres-owned files, atomically', () => {
    writeMemberConfiguration(dataDir(), pg, { port: 5999 }, settings, 'm1');
    for (const name of ['pg_hba.conf', 'relevo.conf', 'postgresql.conf']) {
      const s = statSync(join(dataDir(), name));
      assert.equal(s.uid, pg.uid, name);
      assert.equal(s.mode & 0o777, 0o600, name);
    }
    assert.deepEqual(readdirSync(dataDir()).filter((n) => n.includes('.relevo-')), [], 'no temporary file left');
  });

  for (const name of ['pg_hba.conf', 'relevo.conf', 'postgresql.conf']) {
    it(`refuses a symlinked ${name} pointing at a root-owned file; the target stays untouched`, () => {
      const target = rootTarget(dir, `target-${name}`);
      const link = join(dataDir(), name);
      const saved = join(dir, `saved-${name}`);
      writeFileSync(saved, readFileSync(link));
      plantLink(link, target.path, pg.uid, pg.gid);
      try {
        // allowedNetworks changed: relevo would rewrite pg_hba.conf and relevo.conf
        const changed = ClusterSettingsSchema.parse({ allowedNetworks: ['10.0.0.0/8'] });
        assert.throws(
          () => writeMemberConfiguration(dataDir(), pg, { port: 6000 }, changed, 'm1'),
          (e: unknown) => e instanceof UnsafePathError && e.code === 'UNSAFE_PATH_SYMLINK' && e.message.includes(link),
        );
        target.check();
      } finally {
        rmSync(link);
        writeFileSync(link, readFileSync(saved), { mode: 0o600 });
        lchownSync(link, pg.uid, pg.gid);
      }
    });
  }

  it('removes a failed data directory with postgres rights only: links are not followed, root files stay', () => {
    const tree = join(dir, 'pg', 'failed');
    ensureOwnedDir(tree, pg, 0o700);
    const target = rootTarget(dir, 'target-rm');
    plantLink(join(tree, 'link'), dir, pg.uid, pg.gid);
    removeOwnedTree(tree, pg);
    target.check();
    // A directory root put inside is beyond postgres' rights: the removal fails instead of deleting it.
    ensureOwnedDir(tree, pg, 0o700);
    mkdirSync(join(tree, 'rootdir'), { mode: 0o755 });
    const inner = rootTarget(join(tree, 'rootdir'), 'kept');
    assert.throws(() => removeOwnedTree(tree, pg), /could not remove .* as postgres/);
    inner.check();
  });

  it('refuses a hard link, a foreign-owned file, a symlinked passfile and a symlinked data directory', () => {
    const target = rootTarget(dir, 'target-hard');
    const hba = join(dataDir(), 'pg_hba.conf');
    rmSync(hba);
    linkSync(target.path, hba);
    assert.throws(() => writeMemberConfiguration(dataDir(), pg, {}, settings, 'm1'), (e: unknown) => e instanceof UnsafePathError && e.code === 'UNSAFE_PATH_TYPE');
    target.check();
    rmSync(hba);

    const pass = rootTarget(dir, 'target-pgpass');
    const passfile = `${dataDir()}.pgpass`;
    plantLink(passfile, pass.path, pg.uid, pg.gid);
    assert.throws(() => writePassfile(passfile, pg, { replicationPassword: 'r', agentPassword: 'a' }), (e: unknown) => e instanceof UnsafePathError && e.code === 'UNSAFE_PATH_SYMLINK');
    pass.check();

    // The parent belongs to postgres: it can swap the whole data directory for a link to a root directory.
    const rootDir = join(dir, 'root-dir');
    mkdirSync(rootDir, { mode: 0o700 });
    const conf = rootTarget(rootDir, 'pg_hba.conf');
    const moved = `${dataDir()}.real`;
    renameSync(dataDir(), moved);
    plantLink(dataDir(), rootDir, pg.uid, pg.gid);
    try {
      assert.throws(() => writeMemberConfiguration(dataDir(), pg, {}, settings, 'm1'), (e: unknown) => e instanceof UnsafePathError && e.code === 'UNSAFE_PATH_SYMLINK');
      conf.check();
      assert.equal(statSync(rootDir).uid, 0);
    } finally {
      rmSync(dataDir());
      renameSync(moved, dataDir());
    }
  });
});

describe('access rules cannot be opened up', () => {
  it('`config check` refuses hba_file in member parameters and a trust entry, naming them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'relevo-sec-check-'));
    try {
      const base = `cluster: c1\nname: m1\nstore: { backend: embedded, path: ${dir}/store.db }\nsecrets: { file: ${dir}/secrets.yaml }\n`;
      const file = join(dir, 'm1.yaml');
      writeFileSync(file, `${base}postgres: { dataDir: ${dir}/data, parameters: { hba_file: /tmp/hba, work_mem: 4MB } }\n`);
      const result = await relevo(['config', 'check', file]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /postgres\.parameters\.hba_file/);
      assert.match(result.stderr, /managed by relevo or changes authentication/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * Starts a process that samples every /proc/PID/cmdline every few
 * milliseconds, independent of the test's event loop; stop() returns every
 * distinct command line seen.
 */
function sampleCmdlines(): { stop(): Promise<string[]> } {
  const script = `
    const fs = require('fs'); const seen = new Set();
    const sample = () => { for (const p of fs.readdirSync('/proc')) { if (!/^\\d+$/.test(p)) continue;
      try { const c = fs.readFileSync('/proc/' + p + '/cmdline', 'latin1'); if (c) seen.add(c.split('\\0').join(' ')); } catch {} } };
    const timer = setInterval(sample, 5);
    process.on('SIGTERM', () => { clearInterval(timer); sample(); process.stdout.write(JSON.stringify([...seen]), () => process.exit(0)); });`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('latin1')));
  return {
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', () => resolve(JSON.parse(out || '[]') as string[]));
        child.kill('SIGTERM');
      }),
  };
}

describe('a running cluster (as root)', asRoot, () => {
  let cluster: TestCluster;
  let faults: Faults;
  let sampler: ReturnType<typeof sampleCmdlines> | undefined;
  before(async () => {
    cluster = await TestCluster.create({ store: 'embedded', settings: { ...FAULT_TEST_SETTINGS, synchronousMode: 'off' } });
    faults = new Faults(cluster);
  });
  after(async () => {
    await sampler?.stop();
    await faults.cleanup();
    await cluster.destroy();
  });

  it('no secret in any argv during bootstrap, clone and rewind, nor in any log', { timeout: 180_000 }, async () => {
    sampler = sampleCmdlines();
    await cluster.defineMember('node1');
    await cluster.defineMember('node2');
    cluster.startAgent('node1');
    await cluster.waitHealthy(['node1'], 90_000);
    cluster.startAgent('node2');
    await cluster.waitHealthy(['node1', 'node2'], 90_000);
    // Machine loss of the primary: node2 takes over; node1 returns and goes through pg_rewind.
    await faults.kill('node1', 'both');
    await waitFor('node2 primary', async () => (await cluster.status('node2'))?.state === 'primary', 60_000);
    cluster.startAgent('node1');
    await cluster.waitHealthy(['node1', 'node2'], 90_000);
    const cmdlines = await sampler.stop();
    sampler = undefined;

    for (const program of ['initdb', 'pg_basebackup', 'pg_rewind']) {
      assert.ok(cmdlines.some((c) => c.includes(program)), `the sampler saw ${program} run (else this test proves nothing)`);
    }
    const credentials = loadCredentials(cluster.member('node1').config)!;
    const secrets = [credentials.agentPassword, credentials.replicationPassword];
    for (const secret of secrets) {
      assert.deepEqual(cmdlines.filter((c) => c.includes(secret)), [], 'no argv holds a password');
    }
    assert.match(readFileSync(cluster.member('node1').logFile, 'utf8'), /rewind/i, 'node1 went through pg_rewind');
    const logs = [...cluster.members.values()].flatMap((m) => [m.logFile, `${m.config.postgres.dataDir}.log`]);
    for (const log of logs) {
      const text = readFileSync(log, 'utf8');
      for (const secret of secrets) assert.ok(!text.includes(secret), `${log} holds no password`);
    }
  });

  it('`config set` refuses a trust injection and hba_file, and changes nothing', async () => {
    const before = await cluster.cli(['config', 'show']);
    const injected = await cluster.cli(['config', 'set', 'allowedNetworks=["0.0.0.0/0 trust #","samenet"]']);
    assert.equal(injected.code, 2, injected.stderr);
    assert.match(injected.stderr, /allowedNetworks\.0.*0\.0\.0\.0\/0 trust #/);
    const hbaFile = await cluster.cli(['config', 'set', 'postgresql.hba_file=/tmp/hba']);
    assert.equal(hbaFile.code, 2, hbaFile.stderr);
    assert.match(hbaFile.stderr, /hba_file/);
    assert.equal((await cluster.cli(['config', 'show'])).stdout, before.stdout, 'settings unchanged');
    for (const name of ['node1', 'node2']) {
      const hba = readFileSync(join(cluster.member(name).config.postgres.dataDir, 'pg_hba.conf'), 'utf8');
      assert.doesNotMatch(hba, /trust/);
    }
  });

  it('the agent refuses a pg_hba.conf that postgres replaced with a link to a root file; the file stays untouched', { timeout: 60_000 }, async () => {
    const pg = lookupOsUser('postgres');
    const target = rootTarget(cluster.dir, 'root-secret');
    const hba = join(cluster.member('node1').config.postgres.dataDir, 'pg_hba.conf');
    plantLink(hba, target.path, pg.uid, pg.gid);
    const changed = await cluster.cli(['config', 'set', 'allowedNetworks=["samenet","::1/128","127.0.0.0/8"]']);
    assert.equal(changed.code, 0, changed.stderr);
    await waitFor('node1 to refuse the link', () => readFileSync(cluster.member('node1').logFile, 'utf8').includes(`UNSAFE_PATH_SYMLINK: refusing ${hba}`), 30_000);
    // node2 applied the change: the agents acted, node1 refused.
    await waitFor('node2 to apply the change', () => readFileSync(join(cluster.member('node2').config.postgres.dataDir, 'pg_hba.conf'), 'utf8').includes('127.0.0.0/8'), 30_000);
    target.check();
    rmSync(hba);
  });
});

describe('router connection caps', () => {
  let dir: string;
  let store: EmbeddedStore;
  let router: RouterHandle;
  const clients: pg.Client[] = [];
  const sockets: Socket[] = [];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'relevo-sec-router-'));
    store = await EmbeddedStore.open({ path: join(dir, 'store.db'), timeoutMs: 2_000 });
    const keys = clusterKeys('caps');
    // A primary that holds the lease while a switchover is under way: new read-write connections are held.
    await store.put(keys.member('a'), JSON.stringify(member('a', { role: 'primary', state: 'primary', upstream: null })));
    const lease = await store.grantLease(60_000);
    await store.put(keys.leader, JSON.stringify({ member: 'a', ttlMs: 10_000, acquiredAt: new Date().toISOString() }), { lease });
    await store.put(keys.failover, JSON.stringify({ kind: 'switchover', from: 'a', to: null, at: null, force: false, shutdownLsn: null, requestedAt: new Date().toISOString() }));
    router = await startRouter({
      name: 'caps',
      cluster: 'caps',
      store,
      listen: { readWrite: `127.0.0.1:${await freePort()}`, readOnly: null },
      limits: { maxConnections: 3, maxHeld: 2 },
      timeouts: { holdMs: 60_000, startupMs: 60_000 },
    });
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    for (const c of clients) await c.end().catch(() => undefined);
    await router?.stop();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const rw = () => router.stats().listeners.find((l) => l.role === 'rw');
  const connectRw = async (): Promise<void> => {
    const [host, port] = router.addresses.readWrite!.split(':');
    const client = new pg.Client({ host, port: Number(port), user: 'x', database: 'x', password: 'x' });
    client.on('error', () => undefined);
    clients.push(client);
    await client.connect();
  };

  it('holds at most maxHeld connections and accepts at most maxConnections, refusing the rest with 53300', { timeout: 30_000 }, async () => {
    await waitFor('router to see the switchover', () => router.stats().switchover, 10_000);
    const held = [connectRw(), connectRw()];
    for (const p of held) p.catch(() => undefined);
    await waitFor('two held connections', () => rw()?.held === 2, 10_000);
    await assert.rejects(connectRw(), (e: Error & { code?: string }) => e.code === '53300' && /waiting for the switchover.*limit 2/.test(e.message));
    // A silent client takes the third slot; the next one is over the cap at once.
    const [host, port] = router.addresses.readWrite!.split(':');
    const silent = tcpConnect(Number(port), host!);
    sockets.push(silent);
    silent.on('error', () => undefined);
    await new Promise((resolve) => silent.once('connect', resolve));
    await waitFor('three connections', () => rw()?.accepted === 4, 10_000);
    await assert.rejects(connectRw(), (e: Error) => /too many connections to this listener \(limit 3\)/.test(e.message));
    assert.equal(rw()?.held, 2, 'the held ones are still waiting');
  });
});

describe('an agent running as the postgres OS user (the recommended mode)', asRoot, () => {
  let etcd: EtcdProcess;
  let cluster: TestCluster;
  before(async () => {
    etcd = await startEtcd();
    cluster = await TestCluster.create({ store: { endpoints: etcd.endpoints }, settings: { ...FAULT_TEST_SETTINGS, synchronousMode: 'off' } });
    const pg = lookupOsUser('postgres');
    // The operator gives postgres its directory; the agent creates everything below it itself.
    chownSync(cluster.dir, pg.uid, pg.gid);
  });
  after(async () => {
    await cluster?.destroy();
    await etcd?.stop();
  });

  it('bootstraps and serves without root', { timeout: 120_000 }, async () => {
    // setpriv execs in place: the agent keeps the PID the cluster helper signals.
    await cluster.defineMember('solo', {}, { address: '127.0.0.1', launcher: (argv) => ['setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups', '--', ...argv] });
    const agent = cluster.startAgent('solo');
    await cluster.waitHealthy(['solo'], 90_000);
    const pg = lookupOsUser('postgres');
    assert.equal(statSync(`/proc/${agent.pid}`).uid, pg.uid, 'the agent runs as postgres');
    const dataDir = cluster.member('solo').config.postgres.dataDir;
    for (const path of [dataDir, join(dataDir, 'pg_hba.conf'), `${dataDir}.pgpass`, join(cluster.dir, 'secrets.yaml')]) {
      assert.equal(statSync(path).uid, pg.uid, path);
    }
    assert.equal((await cluster.sql<{ one: number }>('solo', 'SELECT 1 AS one'))[0]?.one, 1);
  });
});
