import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { basicAuthHeader } from '../../src/api/auth.js';
import { buildApi } from '../../src/api/server.js';
import { clusterKeys } from '../../src/cluster/keys.js';
import { defaultClusterSettings } from '../../src/cluster/settings.js';
import { CATALOGUE } from '../../src/errors/catalogue.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';

/** The REST API answers refusals with {code, message, hint} from the catalogue (an embedded store; no PostgreSQL needed). */
describe('API error bodies', () => {
  const dir = mkdtempSync(join(tmpdir(), 'relevo-api-errors-'));
  const keys = clusterKeys('apierr');
  const credentials = { username: 'ops', password: 'api-Err-1' };
  let store: Store;
  const source = { currentStatus: () => undefined, currentSync: () => undefined, request: () => undefined };

  before(async () => {
    store = await openStore({ backend: 'embedded', path: join(dir, 'store.db'), timeoutMs: 2_000 });
    await store.put(keys.config, JSON.stringify(defaultClusterSettings()));
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const expectCode = (response: { statusCode: number; json(): unknown }, status: number, code: keyof typeof CATALOGUE) => {
    assert.equal(response.statusCode, status);
    const body = response.json() as { code: string; message: string; hint: string };
    assert.equal(body.code, code);
    assert.equal(body.hint, CATALOGUE[code].hint);
    assert.ok(body.message.length > 0);
  };

  it('carries the code of every refusal', async () => {
    const off = buildApi({ source, store, keys, credentials: undefined, authReadOnly: false });
    expectCode(await off.inject({ method: 'POST', url: '/pause' }), 403, 'API_DISABLED');
    expectCode(await off.inject({ method: 'GET', url: '/status' }), 503, 'API_NOT_READY');
    const api = buildApi({ source, store, keys, credentials, authReadOnly: false });
    const auth = { authorization: basicAuthHeader(credentials) };
    expectCode(await api.inject({ method: 'POST', url: '/pause', headers: { authorization: basicAuthHeader({ username: 'ops', password: 'wrong' }) } }), 401, 'API_AUTH_REQUIRED');
    expectCode(await api.inject({ method: 'POST', url: '/switchover', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"to": 5}' }), 400, 'API_BAD_REQUEST');
    expectCode(await api.inject({ method: 'POST', url: '/resume', headers: auth }), 409, 'NOT_PAUSED');
    assert.equal((await api.inject({ method: 'POST', url: '/pause', headers: auth })).statusCode, 202);
    expectCode(await api.inject({ method: 'POST', url: '/pause', headers: auth }), 409, 'ALREADY_PAUSED');
    expectCode(await api.inject({ method: 'POST', url: '/failover', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"to": "nosuch"}' }), 409, 'UNKNOWN_MEMBER');
    await api.close();
    await off.close();
  });

  it('GET /failsafe: the agent\'s answer, read-authenticated like /status; inactive from an agent without failsafe', async () => {
    const answer = { member: 'a', active: true, remainingMs: 3_000, reason: 'held' };
    const api = buildApi({ source: { ...source, failsafeGrant: () => answer }, store, keys, credentials, authReadOnly: true });
    assert.equal((await api.inject({ method: 'GET', url: '/failsafe' })).statusCode, 401);
    const response = await api.inject({ method: 'GET', url: '/failsafe', headers: { authorization: basicAuthHeader(credentials) } });
    assert.equal(response.statusCode, 200);
    assert.deepEqual(response.json(), answer);
    const plain = buildApi({ source, store, keys, credentials: undefined, authReadOnly: false });
    assert.deepEqual((await plain.inject({ method: 'GET', url: '/failsafe' })).json(), { member: '', active: false, remainingMs: 0, reason: 'this agent does not take part in failsafe' });
    await api.close();
    await plain.close();
  });
});
