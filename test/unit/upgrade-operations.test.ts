import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { basicAuthHeader } from '../../src/api/auth.js';
import { buildApi } from '../../src/api/server.js';
import { admitUpgradeRequest, upgradeRoutes, upgradeSqlRefusal } from '../../src/api/upgrade-route.js';
import { clusterKeys } from '../../src/cluster/keys.js';
import type { MemberStatus } from '../../src/cluster/types.js';
import { MemberConfigSchema } from '../../src/config/member.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { UpgradeError } from '../../src/upgrade/errors.js';
import { parseOperation, sqlOperationRefusal, UPGRADE_OPERATIONS, type OpContext } from '../../src/upgrade/operations.js';
import { upgradePassword } from '../../src/upgrade/role.js';
import { call, type Side } from '../../src/upgrade/side.js';

const primary = { name: 'blue1', role: 'primary', state: 'primary' } as MemberStatus;
const replica = { name: 'blue2', role: 'replica', state: 'replica' } as MemberStatus;

describe('upgrade operations: parameters', () => {
  it('accepts each operation with well-formed parameters', () => {
    const { verifier } = upgradePassword();
    assert.ok(parseOperation('publish', { database: 'app', publication: 'relevo_upgrade', replicaIdentityFull: false, verifier }).ok);
    assert.ok(parseOperation('await-slot', { database: 'app', slot: 'relevo_upgrade_green', lsn: '0/16B3748', timeoutMs: 30_000 }).ok);
    assert.ok(parseOperation('dump-roles', {}).ok);
    assert.ok(parseOperation('apply-sequences', { database: 'app', values: [{ schema: 'public', name: 'items_id_seq', lastValue: '-42' }] }).ok);
  });

  it('refuses unknown operations, unknown keys and values that are not what they claim (never SQL)', () => {
    const refused = (name: string, params: unknown, pattern: RegExp) => {
      const r = parseOperation(name, params);
      assert.equal(r.ok, false, `${name} ${JSON.stringify(params)}`);
      if (!r.ok) assert.match(r.error, pattern);
    };
    refused('query', { sql: 'SELECT 1' }, /unknown upgrade operation "query"/);
    refused('fence', { database: 'app', drainTimeoutMs: 1000, sql: 'DROP TABLE x' }, /unrecognized key/i);
    refused('unpublish', { database: 'app', slot: 'x; DROP DATABASE app', publication: 'p' }, /slot: expected a lower-case object name/);
    refused('publish', { database: 'app', publication: 'p', replicaIdentityFull: false, verifier: 'plain-password' }, /verifier: expected a SCRAM-SHA-256 verifier/);
    refused('await-slot', { database: 'app', slot: 's', lsn: "0/1' OR true", timeoutMs: 10 }, /lsn/);
    refused('await-slot', { database: 'app', slot: 's', lsn: '0/1', timeoutMs: 86_400_000 }, /timeoutMs/);
    refused('subscribe', { database: 'app', subscription: 's', publication: 'p', sourceCluster: 'blue', host: "h' password='x", port: 5432, password: 'x'.repeat(20) }, /host/);
    refused('apply-sequences', { database: 'app', values: [{ schema: 'public', name: 's', lastValue: '1); DROP TABLE t; --' }] }, /lastValue/);
    refused('inspect-source', {}, /database/);
  });

  it('every operation has a strict schema', () => {
    for (const [name, op] of Object.entries(UPGRADE_OPERATIONS)) assert.equal(op.schema.safeParse({ surprise: 1 }).success, false, name);
  });
});

describe('upgrade operations: only the primary runs them', () => {
  it('refuses on a replica, on a demoting primary and before the agent observed PostgreSQL', () => {
    const params = { database: 'app' };
    const r = admitUpgradeRequest(replica, 'inspect-source', params);
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.equal(r.status, 409);
      assert.equal(r.body.code, 'UPGRADE_NOT_PRIMARY');
      assert.match(r.body.message, /blue2 is not the primary/);
    }
    const demoting = admitUpgradeRequest({ ...primary, state: 'demoting' } as unknown as MemberStatus, 'inspect-source', params);
    assert.equal(!demoting.ok && demoting.body.code, 'UPGRADE_NOT_PRIMARY');
    const early = admitUpgradeRequest(undefined, 'inspect-source', params);
    assert.equal(!early.ok && early.status, 503);
    assert.equal(admitUpgradeRequest(primary, 'inspect-source', params).ok, true);
    const bad = admitUpgradeRequest(primary, 'inspect-source', { database: 'app', extra: true });
    assert.equal(!bad.ok && bad.status, 400);
  });
});

describe('POST /upgrade/<operation> and the CLI client', () => {
  const dir = mkdtempSync(join(tmpdir(), 'relevo-upgrade-ops-'));
  const keys = clusterKeys('blue');
  const credentials = { username: 'ops', password: 'upgrade-Ops-1' };
  let store: Store;
  let status: MemberStatus = replica;
  const seen: string[] = [];
  // No PostgreSQL: a context whose connection reports the database missing, as a real one would.
  const context = (): OpContext => ({
    cluster: 'blue',
    member: 'blue1',
    dataDir: join(dir, 'data'),
    user: { name: 'postgres', uid: 0, gid: 0, home: '/' } as OpContext['user'],
    connect: async (database) => {
      seen.push(database);
      throw new UpgradeError('UPGRADE_UNKNOWN_DATABASE', `database "${database}" does not exist on cluster blue`);
    },
    program: async () => '',
  });
  const source = { currentStatus: () => status, currentSync: () => undefined, request: () => undefined };

  before(async () => {
    store = await openStore({ backend: 'embedded', path: join(dir, 'store.db'), timeoutMs: 2_000 });
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('authenticates like switchover, refuses a replica, and carries the operation\'s error code', async () => {
    const api = buildApi({ source, store, keys, credentials, authReadOnly: false, extensions: [upgradeRoutes({ status: () => status, context, sqlRefusal: upgradeSqlRefusal(store, 'green') })] });
    const post = (op: string, body: unknown, auth = true) =>
      api.inject({ method: 'POST', url: `/upgrade/${op}`, headers: { 'content-type': 'application/json', ...(auth ? { authorization: basicAuthHeader(credentials) } : {}) }, payload: JSON.stringify(body) });
    assert.equal((await post('inspect-source', { database: 'app' }, false)).statusCode, 401);
    status = replica;
    let r = await post('inspect-source', { database: 'app' });
    assert.equal(r.statusCode, 409);
    assert.equal(r.json().code, 'UPGRADE_NOT_PRIMARY');
    assert.deepEqual(seen, [], 'nothing ran on the replica');
    status = primary;
    r = await post('inspect-source', { database: 'nosuch' });
    assert.equal(r.statusCode, 409);
    assert.equal(r.json().code, 'UPGRADE_UNKNOWN_DATABASE');
    assert.deepEqual(seen, ['nosuch']);
    r = await post('nosuch', {});
    assert.equal(r.statusCode, 400);
    // SQL text (a dump) runs only while the store records an upgrade from blue into this cluster at step checked:
    // the API's credentials alone do not make a superuser.
    const dump = { database: 'app', source: 'blue', sql: `-- ${'x'.repeat(200_000)}` };
    const before = seen.length;
    r = await post('restore-schema', dump);
    assert.equal(r.statusCode, 409);
    assert.equal(r.json().code, 'UPGRADE_WRONG_STEP');
    assert.match(r.json().message, /no upgrade from blue is recorded/);
    const record = (step: string, target = 'green') =>
      store.put(clusterKeys('blue').upgrade, JSON.stringify({ source: 'blue', target, database: 'app', step, publication: 'p', subscription: 's', updatedAt: new Date().toISOString() }));
    await record('schema');
    assert.equal((await post('restore-schema', dump)).json().code, 'UPGRADE_WRONG_STEP');
    await record('checked', 'orange');
    assert.equal((await post('restore-roles', { source: 'blue', sql: 'SELECT 1' })).json().code, 'UPGRADE_WRONG_STEP');
    assert.equal(seen.length, before, 'nothing ran while the record did not allow it');
    // A schema dump is far above the API's 4 kB body limit: this route takes it.
    await record('checked');
    r = await post('restore-schema', dump);
    assert.equal(r.json().code, 'UPGRADE_UNKNOWN_DATABASE');
    await store.delete(clusterKeys('blue').upgrade);
    await api.close();
    // A store that cannot be read: the upgrade's code, not a bare 500.
    const unreadable = buildApi({ source, store, keys, credentials, authReadOnly: false, extensions: [upgradeRoutes({ status: () => status, context, sqlRefusal: async () => { throw new UpgradeError('UPGRADE_OPERATION_FAILED', 'cannot read the upgrade record of blue: store down'); } })] });
    const down = await unreadable.inject({ method: 'POST', url: '/upgrade/restore-schema', headers: { 'content-type': 'application/json', authorization: basicAuthHeader(credentials) }, payload: JSON.stringify(dump) });
    assert.equal(down.statusCode, 409);
    assert.equal(down.json().code, 'UPGRADE_OPERATION_FAILED');
    assert.equal(seen.length, before + 1, 'nothing more ran');
    await unreadable.close();
  });

  it('the CLI maps answers to upgrade codes: not primary, refused credentials, unreachable', async () => {
    const api = buildApi({ source, store, keys, credentials, authReadOnly: false, extensions: [upgradeRoutes({ status: () => status, context, sqlRefusal: upgradeSqlRefusal(store, 'green') })] });
    await api.listen({ host: '127.0.0.1', port: 0 });
    const port = (api.server.address() as { port: number }).port;
    process.env.RELEVO_TEST_UPGRADE_API = credentials.password;
    process.env.RELEVO_TEST_UPGRADE_API_WRONG = 'wrong';
    const config = (env: string) =>
      MemberConfigSchema.parse({
        cluster: 'blue',
        name: 'blue2',
        store: { backend: 'embedded', path: join(dir, 'store.db') },
        postgres: { dataDir: join(dir, 'data') },
        secrets: { file: join(dir, 'secrets.yaml') },
        tls: { enabled: false },
        api: { listen: '127.0.0.1:0', auth: { username: 'ops', password: { env } } },
      });
    const side = (env: string, apiUrl = `http://127.0.0.1:${port}`): Side => ({ cluster: 'blue', config: config(env), keys, host: '127.0.0.1', port: 5432, member: 'blue1', apiUrl, caPem: undefined, unreachable: 'UPGRADE_SOURCE_UNREACHABLE' });
    const codeOf = async (promise: Promise<unknown>) => {
      try {
        await promise;
        return 'ok';
      } catch (error) {
        assert.ok(error instanceof UpgradeError, String(error));
        return error.code;
      }
    };
    try {
      status = replica;
      assert.equal(await codeOf(call(side('RELEVO_TEST_UPGRADE_API'), 'inspect-source', { database: 'app' })), 'UPGRADE_NOT_PRIMARY');
      status = primary;
      assert.equal(await codeOf(call(side('RELEVO_TEST_UPGRADE_API'), 'inspect-source', { database: 'nosuch' })), 'UPGRADE_UNKNOWN_DATABASE');
      assert.equal(await codeOf(call(side('RELEVO_TEST_UPGRADE_API_WRONG'), 'inspect-source', { database: 'app' })), 'UPGRADE_API_REFUSED');
      assert.equal(await codeOf(call(side('RELEVO_TEST_UPGRADE_API', 'http://127.0.0.1:1'), 'inspect-source', { database: 'app' })), 'UPGRADE_SOURCE_UNREACHABLE');
    } finally {
      await api.close();
    }
  });
});
