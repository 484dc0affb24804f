/** The REST API in-process (fastify inject) over a real embedded store. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { OperatorRequest } from '../../src/agent/observation.js';
import { basicAuthHeader } from '../../src/api/auth.js';
import { buildApi } from '../../src/api/server.js';
import { clusterKeys } from '../../src/cluster/keys.js';
import type { MemberStatus, SyncRecord } from '../../src/cluster/types.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';
import { member } from '../unit/observations.js';

const dir = mkdtempSync(join(tmpdir(), 'relevo-api-'));
const keys = clusterKeys('api');
const credentials = { username: 'admin', password: 'correct horse' };

/** A member whose status the test sets, as the agent would after observing PostgreSQL. */
class MemberSource {
  status: MemberStatus | undefined;
  sync: SyncRecord | undefined;
  requests: OperatorRequest[] = [];
  currentStatus() {
    return this.status;
  }
  currentSync() {
    return this.sync;
  }
  request(r: OperatorRequest) {
    this.requests.push(r);
  }
}

describe('REST API', () => {
  let store: Store;
  const source = new MemberSource();
  let app: ReturnType<typeof buildApi>;
  before(async () => {
    store = await openStore({ backend: 'embedded', path: join(dir, 'store.db'), timeoutMs: 2000 });
    app = buildApi({ source, store, keys, credentials, authReadOnly: false });
  });
  after(async () => {
    await app.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const code = async (method: 'GET' | 'HEAD' | 'OPTIONS', url: string) => (await app.inject({ method, url })).statusCode;

  it('answers 503 everywhere before the first observation', async () => {
    for (const path of ['/primary', '/replica', '/read-only', '/sync', '/async', '/health', '/readiness', '/status']) assert.equal(await code('GET', path), 503, path);
    assert.equal(await code('GET', '/liveness'), 200);
  });

  it('health checks follow the role, the lag limit and the synchronous set, for GET, HEAD and OPTIONS', async () => {
    source.status = member('a', { role: 'primary', state: 'primary', upstream: null });
    source.sync = { leader: 'a', members: ['b'], updatedAt: 'x' };
    for (const method of ['GET', 'HEAD', 'OPTIONS'] as const) {
      assert.equal(await code(method, '/primary'), 200);
      assert.equal(await code(method, '/replica'), 503);
    }
    assert.equal(await code('GET', '/read-only'), 200);
    assert.equal(await code('GET', '/sync'), 503);
    source.status = member('b', { lagBytes: 2 * 1024 * 1024 });
    assert.equal(await code('GET', '/primary'), 503);
    assert.equal(await code('GET', '/replica'), 200);
    assert.equal(await code('GET', '/replica?lag=1MB'), 503);
    assert.equal(await code('GET', '/replica?lag=16MB'), 200);
    assert.equal(await code('GET', '/replica?lag=lots'), 400);
    assert.equal(await code('GET', '/sync'), 200);
    assert.equal(await code('GET', '/async'), 503);
    source.status = member('c');
    assert.equal(await code('GET', '/async'), 200);
    source.status = member('c', { streaming: false });
    assert.equal(await code('GET', '/replica'), 503);
    assert.equal(await code('GET', '/readiness'), 503);
  });

  it('state-changing endpoints require authentication', async () => {
    const anonymous = await app.inject({ method: 'POST', url: '/restart' });
    assert.equal(anonymous.statusCode, 401);
    const wrong = await app.inject({ method: 'POST', url: '/restart', headers: { authorization: basicAuthHeader({ ...credentials, password: 'wrong' }) } });
    assert.equal(wrong.statusCode, 401);
    assert.deepEqual(source.requests, []);
    const ok = await app.inject({ method: 'POST', url: '/restart', headers: { authorization: basicAuthHeader(credentials) } });
    assert.equal(ok.statusCode, 202);
    assert.deepEqual(source.requests, [{ kind: 'restart' }]);
    const disabled = buildApi({ source, store, keys, credentials: undefined, authReadOnly: false });
    assert.equal((await disabled.inject({ method: 'POST', url: '/pause' })).statusCode, 403);
    await disabled.close();
  });

  it('refuses impossible requests with 409 and a reason, changing nothing', async () => {
    const auth = { authorization: basicAuthHeader(credentials) };
    const switchover = await app.inject({ method: 'POST', url: '/switchover', headers: auth, payload: { to: 'b' } });
    assert.equal(switchover.statusCode, 409);
    assert.equal(switchover.json<{ code: string }>().code, 'NO_PRIMARY');
    assert.equal(await store.get(keys.failover), undefined);
    source.status = member('a', { role: 'primary', state: 'primary' });
    const reinit = await app.inject({ method: 'POST', url: '/reinit', headers: auth });
    assert.equal(reinit.statusCode, 409);
    assert.equal(reinit.json<{ code: string }>().code, 'PRIMARY_REINIT');
    const badBody = await app.inject({ method: 'POST', url: '/failover', headers: auth, payload: {} });
    assert.equal(badBody.statusCode, 400);
    assert.equal(badBody.json<{ code: string }>().code, 'API_BAD_REQUEST');
    assert.equal((await app.inject({ method: 'POST', url: '/pause', headers: auth })).statusCode, 202);
    const again = await app.inject({ method: 'POST', url: '/pause', headers: auth });
    assert.equal(again.statusCode, 409);
    assert.equal(again.json<{ code: string }>().code, 'ALREADY_PAUSED');
  });

  it('can require authentication for the read-only endpoints too', async () => {
    const locked = buildApi({ source, store, keys, credentials, authReadOnly: true });
    assert.equal((await locked.inject({ method: 'GET', url: '/status' })).statusCode, 401);
    assert.equal((await locked.inject({ method: 'GET', url: '/status', headers: { authorization: basicAuthHeader(credentials) } })).statusCode, 200);
    await locked.close();
  });
});
