import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { askPeers } from '../../src/agent/observe.js';
import { basicAuthHeader, peerAuthorization } from '../../src/api/auth.js';
import { API_LIMITS, buildApi } from '../../src/api/server.js';
import { CliError } from '../../src/cli/context.js';
import { prepareDemoDir } from '../../src/cli/demo.js';
import { isManagedParameter, MANAGED_PARAMETERS, networkProblem } from '../../src/cluster/parameters.js';
import { ClusterSettingsSchema } from '../../src/cluster/settings.js';
import { ConfigError, loadMemberConfigChecked, parseMemberConfig } from '../../src/config/load.js';
import { MemberConfigSchema } from '../../src/config/member.js';
import { baseParameters, defaultParameters, renderHba, renderRelevoConf } from '../../src/postgres/conf.js';
import { freePort } from '../helpers/ports.js';
import { member } from './observations.js';

const MEMBER_YAML = `cluster: c1\nname: m1\nstore: { backend: embedded, path: /x/store.db }\npostgres: { dataDir: /x/data }\nsecrets: { file: /x/secrets.yaml }\n`;

describe('allowedNetworks', () => {
  it('accepts CIDR ranges, samehost, samenet and host names', () => {
    for (const entry of ['10.0.0.0/8', '127.0.0.1/32', '0.0.0.0/0', '::1/128', 'fd00::/8', 'samehost', 'samenet', 'db1.example.com', '.example.com', 'localhost']) {
      assert.equal(networkProblem(entry), undefined, entry);
    }
  });
  it('refuses anything else, naming the entry', () => {
    for (const entry of ['0.0.0.0/0 trust #', '10.0.0.1', 'all', '10.0.0.0/33', '::/129', 'a b', 'host,other', '"x"', '', '10.0.0.0/8 trust', '@file', '+group', 'samenet\n']) {
      const problem = networkProblem(entry);
      assert.ok(problem, `refused: ${JSON.stringify(entry)}`);
    }
    const result = ClusterSettingsSchema.safeParse({ allowedNetworks: ['0.0.0.0/0 trust #', 'samenet'] });
    assert.equal(result.success, false);
    assert.match(JSON.stringify(result.error!.issues), /0\.0\.0\.0\/0 trust #/);
  });
  it('what pg_hba.conf gets is only ever scram-sha-256, peer or reject; superusers never over the network', () => {
    const hba = renderHba(ClusterSettingsSchema.parse({ allowedNetworks: ['10.0.0.0/8', 'samenet', 'db.example.com'] }));
    const lines = hba.split('\n').filter((l) => l && !l.startsWith('#'));
    for (const line of lines) assert.match(line, /\s(scram-sha-256|peer|reject)$/, line);
    // The superuser roles are rejected on TCP before any rule that could admit them.
    const firstAllowing = lines.findIndex((l) => /^host/.test(l) && !l.endsWith('reject'));
    for (const role of ['relevo', 'postgres']) {
      const rejected = lines.findIndex((l) => new RegExp(`^host\\s+all\\s+${role}\\s+all\\s+reject$`).test(l));
      assert.ok(rejected >= 0 && rejected < firstAllowing, `${role} is rejected on the network first`);
    }
  });
});

describe('PostgreSQL parameters', () => {
  it('refuses managed and authentication parameters in cluster settings and member files', () => {
    for (const name of ['hba_file', 'ident_file', 'listen_addresses', 'port', 'ssl', 'ssl_cert_file', 'password_encryption', 'synchronous_standby_names', 'primary_conninfo', 'primary_slot_name', 'archive_command', 'restore_command', 'include']) {
      assert.equal(ClusterSettingsSchema.safeParse({ postgresql: { [name]: 'x' } }).success, false, `cluster: ${name}`);
      const member = MemberConfigSchema.safeParse({ ...parseMemberConfig(MEMBER_YAML, 'm.yaml'), postgres: { dataDir: '/x/data', parameters: { [name]: 'x' } } });
      assert.equal(member.success, false, `member: ${name}`);
    }
    assert.equal(ClusterSettingsSchema.safeParse({ postgresql: { work_mem: '16MB', shared_buffers: '1GB', wal_level: 'logical' } }).success, true);
    assert.equal(ClusterSettingsSchema.safeParse({ postgresql: { wal_level: 'minimal' } }).success, false);
    assert.equal(ClusterSettingsSchema.safeParse({ postgresql: { work_mem: "1MB'\nhba_file = '/tmp/x" } }).success, false, 'no line break in a value');
  });

  it('every parameter relevo writes to relevo.conf is either managed (refused) or an overridable default: the list cannot drift', () => {
    const config = parseMemberConfig(MEMBER_YAML, 'm.yaml');
    const settings = ClusterSettingsSchema.parse({});
    // As the agent renders it: base parameters, synchronous_standby_names, standby settings.
    const text = renderRelevoConf({ ...baseParameters(config, settings), synchronous_standby_names: 'x' }, { upstream: { address: 'h:5432', slot: 's' }, passfile: '/p' }, 'm1');
    const names = text.split('\n').filter((l) => /^[a-z_]+ =/.test(l)).map((l) => l.split(' ')[0]!);
    assert.ok(names.length > 20);
    const defaults = new Set(Object.keys(defaultParameters()));
    const unclassified = names.filter((n) => !isManagedParameter(n) && !defaults.has(n));
    assert.deepEqual(unclassified, []);
    for (const name of names.filter((n) => !defaults.has(n))) assert.equal(ClusterSettingsSchema.safeParse({ postgresql: { [name]: 'x' } }).success, false, name);
  });

  it('an overridden default still loses to what relevo manages', () => {
    const config = parseMemberConfig(MEMBER_YAML, 'm.yaml');
    const params = baseParameters(config, ClusterSettingsSchema.parse({ postgresql: { shared_buffers: '1GB' } }));
    assert.equal(params.shared_buffers, '1GB');
    assert.equal(params.password_encryption, 'scram-sha-256');
  });
});

describe('member file: addresses, read authentication, secrets', () => {
  const dir = mkdtempSync(join(tmpdir(), 'relevo-unit-sec-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'm.yaml');
  const load = (extra: string) => parseMemberConfig(`${MEMBER_YAML}${extra}`, file);
  const refused = (extra: string, pattern: RegExp) => assert.throws(() => load(extra), (e: unknown) => e instanceof ConfigError && pattern.test(e.message), extra);

  it('refuses a wildcard api.listen without api.url, and a wildcard postgres.listen without connectAddress', () => {
    for (const listen of ['0.0.0.0:8008', '[::]:8008']) refused(`api: { listen: "${listen}" }\n`, /api\.url.*wildcard/);
    load('api: { listen: "0.0.0.0:8008", url: "http://db1.example.com:8008" }\n');
    refused('api: { listen: "0.0.0.0:8008", url: "http://0.0.0.0:8008" }\n', /api\.url.*not reachable/);
    const base = MEMBER_YAML.replace('postgres: { dataDir: /x/data }\n', '');
    for (const listen of ['*', '0.0.0.0', '::', '127.0.0.1,0.0.0.0']) {
      assert.throws(() => parseMemberConfig(`${base}postgres: { dataDir: /x/data, listen: "${listen}" }\n`, file), /postgres\.connectAddress.*wildcard/, listen);
    }
    parseMemberConfig(`${base}postgres: { dataDir: /x/data, listen: "*", connectAddress: "db1.example.com:5432" }\n`, file);
    assert.throws(() => parseMemberConfig(`${base}postgres: { dataDir: /x/data, listen: "*", connectAddress: "0.0.0.0:5432" }\n`, file), /not reachable/);
  });

  it('refuses api.authReadOnly without api.auth', () => {
    refused('api: { authReadOnly: true }\n', /authReadOnly needs api\.auth/);
  });

  it('never echoes a secret: an inline password or a YAML error on a password line', () => {
    assert.throws(
      () => load('api: { auth: { username: u, password: "hunter2" } }\n'),
      (e: unknown) => e instanceof ConfigError && /api\.auth\.password/.test(e.message) && !e.message.includes('hunter2'),
    );
    assert.throws(() => parseMemberConfig(`${MEMBER_YAML}api:\n  auth: { username: u, password: hunter2: x }\n`, file), (e: unknown) => e instanceof ConfigError && !e.message.includes('hunter2'));
  });

  it('holds every secret file to 0600: api password, role passwords, etcd password, secrets file', () => {
    const secret = (name: string, mode: number) => {
      const path = join(dir, name);
      writeFileSync(path, 'hunter2\n', { mode });
      chmodSync(path, mode);
      return path;
    };
    const api = secret('api-password', 0o640);
    const etcd = secret('etcd-password', 0o640);
    const shared = secret('secrets.yaml', 0o644);
    const text = `cluster: c1\nname: m1\nstore: { backend: etcd, endpoints: ["http://127.0.0.1:2379"], username: u, passwordFile: ${etcd} }\npostgres: { dataDir: /x/data }\nsecrets: { file: ${shared}, agentPassword: { file: ${join(dir, 'missing')} } }\napi: { auth: { username: u, password: { file: ${api} } } }\n`;
    writeFileSync(file, text);
    const problems = (() => {
      try {
        loadMemberConfigChecked(file);
      } catch (error) {
        return (error as ConfigError).problems;
      }
      return [];
    })();
    assert.equal(problems.length, 4, problems.join('\n'));
    for (const what of ['api.auth.password.file', 'store.passwordFile', 'secrets.file', 'secrets.agentPassword.file']) assert.ok(problems.some((p) => p.startsWith(what)), what);
    assert.ok(!problems.join('\n').includes('hunter2'));
    for (const path of [api, etcd, shared]) chmodSync(path, 0o600);
    writeFileSync(file, text.replace(`, agentPassword: { file: ${join(dir, 'missing')} }`, ''));
    loadMemberConfigChecked(file);
  });
});

describe('REST API limits and peer credentials', () => {
  const credentials = { username: 'admin', password: 'hunter2' };
  const auth = { authorization: basicAuthHeader(credentials) };
  const status = member('a', { state: 'primary', role: 'primary' });
  const source = { currentStatus: () => status, currentSync: () => undefined, request: () => undefined };
  // No store is reached in these requests: each is refused (or answered) before any operation.
  const app = buildApi({ source, store: undefined as never, keys: undefined as never, credentials, authReadOnly: true });
  after(() => app.close());

  it('authenticates before reading the body', async () => {
    const malformed = { 'content-type': 'application/json' };
    assert.equal((await app.inject({ method: 'POST', url: '/failover', headers: malformed, payload: '{not json' })).statusCode, 401);
    assert.equal((await app.inject({ method: 'POST', url: '/failover', headers: { ...malformed, ...auth }, payload: '{not json' })).statusCode, 400);
    const big = JSON.stringify({ to: 'x'.repeat(API_LIMITS.bodyBytes) });
    assert.equal((await app.inject({ method: 'POST', url: '/failover', headers: malformed, payload: big })).statusCode, 401);
    assert.equal((await app.inject({ method: 'POST', url: '/failover', headers: { ...malformed, ...auth }, payload: big })).statusCode, 413);
  });

  it('checks request bodies against their schema', async () => {
    for (const payload of [{}, { to: 'b', extra: 1 }, { to: 'B;drop' }, { to: 'b', force: 'yes' }]) {
      const response = await app.inject({ method: 'POST', url: '/failover', headers: auth, payload });
      assert.equal(response.statusCode, 400, JSON.stringify(payload));
      assert.match(response.json<{ error: string }>().error, /^body: /);
    }
    assert.equal((await app.inject({ method: 'POST', url: '/switchover', headers: auth, payload: { to: 'b', when: 'now' } })).statusCode, 400);
  });

  it('sets request and connection timeouts', async () => {
    await app.ready();
    assert.equal(app.server.requestTimeout, API_LIMITS.requestTimeoutMs);
    assert.equal(app.server.timeout, API_LIMITS.connectionTimeoutMs);
  });

  it('peers present credentials when reads need them (elections work with api.authReadOnly)', async () => {
    const port = await freePort();
    await app.listen({ host: '127.0.0.1', port });
    const peer = member('a', { apiUrl: `http://127.0.0.1:${port}` });
    const [without] = await askPeers([peer], 'b', 2_000);
    assert.equal(without!.status, undefined);
    assert.match(without!.error!, /401/);
    const config = parseMemberConfig(`${MEMBER_YAML}api: { auth: { username: admin, password: { env: RELEVO_UNIT_API_PW } }, authReadOnly: true }\n`, 'm.yaml');
    process.env.RELEVO_UNIT_API_PW = 'hunter2';
    const [withAuth] = await askPeers([peer], 'b', 2_000, { authorization: peerAuthorization(config)! });
    assert.equal(withAuth!.status?.name, 'a');
    assert.equal(peerAuthorization(parseMemberConfig(MEMBER_YAML, 'm.yaml')), undefined, 'no credentials configured, none sent');
  });
});

describe('relevo demo directory', () => {
  const base = mkdtempSync(join(tmpdir(), 'relevo-unit-demo-'));
  after(() => rmSync(base, { recursive: true, force: true }));
  const refusedDir = (dir: string, pattern: RegExp) => assert.throws(() => prepareDemoDir(dir), (e: unknown) => e instanceof CliError && e.message.includes(dir) && pattern.test(e.message));

  it('creates a fresh directory by default, and a named one that does not exist', () => {
    const fresh = [prepareDemoDir(undefined), prepareDemoDir(undefined)];
    try {
      assert.match(fresh[0]!, /relevo-demo-/);
      assert.equal(statSync(fresh[0]!).mode & 0o777, 0o755);
      assert.notEqual(fresh[1], fresh[0], 'each run gets its own');
    } finally {
      for (const dir of fresh) rmSync(dir, { recursive: true, force: true });
    }
    const named = join(base, 'named');
    assert.equal(prepareDemoDir(named), named);
    assert.equal(prepareDemoDir(named), named, 'a directory an earlier demo created is reused');
  });

  it('refuses a directory it did not create, a link, a foreign or group-writable one', () => {
    const planted = join(base, 'planted');
    mkdirSync(planted);
    refusedDir(planted, /not created by relevo demo/);
    const link = join(base, 'link');
    symlinkSync(join(base, 'named'), link);
    refusedDir(link, /symbolic link/);
    const open = join(base, 'open');
    prepareDemoDir(open);
    chmodSync(open, 0o777);
    refusedDir(open, /writable by group or others/);
    if (process.getuid!() === 0) {
      const foreign = join(base, 'foreign');
      prepareDemoDir(foreign);
      chownSync(foreign, 65534, 65534);
      refusedDir(foreign, /belongs to uid 65534/);
    }
  });
});

describe('docs/security.md', () => {
  it('lists every managed parameter', () => {
    const doc = readFileSync(new URL('../../../docs/security.md', import.meta.url), 'utf8');
    const missing = [...MANAGED_PARAMETERS, 'ssl*'].filter((name) => !doc.includes(`\`${name}\``));
    assert.deepEqual(missing, []);
  });
});
