/** The session pool's bookkeeping: bounded slots per key, reuse, waiters, dropping a member. */
import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { describe, it } from 'node:test';
import { ServerPool, type PooledServer } from '../../src/router/pool.js';

function server(key: string, member = 'a'): PooledServer {
  return { socket: new Socket(), key, member, params: new Map(), pid: 1, secret: 2 };
}

describe('ServerPool', () => {
  it('bounds server sessions per key and hands a released one to the next client', async () => {
    const pool = new ServerPool(2, 60_000);
    assert.equal(pool.acquire('k'), 'open');
    assert.equal(pool.acquire('k'), 'open');
    assert.equal(pool.acquire('k'), undefined, 'third one waits');
    assert.equal(pool.acquire('other'), 'open', 'keys are independent');
    let woken = 0;
    pool.wait('k', () => woken++);
    const s = server('k');
    pool.release(s);
    await new Promise((r) => setImmediate(r));
    assert.equal(woken, 1);
    assert.equal(pool.acquire('k'), s, 'the released server session is reused');
    assert.deepEqual(pool.stats, { idle: 0, open: 3 });
    pool.closed('k');
    assert.equal(pool.acquire('k'), 'open', 'a closed one frees its slot');
  });

  it('drops idle server sessions of a member, freeing their slots', () => {
    const pool = new ServerPool(1, 60_000);
    assert.equal(pool.acquire('ka'), 'open');
    pool.release(server('ka', 'a'));
    assert.equal(pool.acquire('kb'), 'open');
    pool.release(server('kb', 'b'));
    pool.drop('a');
    assert.deepEqual(pool.stats, { idle: 1, open: 1 });
    assert.equal(pool.acquire('ka'), 'open');
    pool.drop();
    assert.equal(pool.stats.idle, 0);
  });
});
