import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { KeepAliveChannel } from '../../src/store/etcd.js';

/** A LeaseKeepAlive stream stand-in: records what was written, answers when told. */
class FakeStream extends EventEmitter {
  written: string[] = [];
  closed = false;
  write(request: { ID: string }): boolean {
    this.written.push(request.ID);
    return true;
  }
  end(): void {
    this.closed = true;
  }
  cancel(): void {
    this.closed = true;
  }
  answer(id: string, ttl: number): void {
    this.emit('data', { ID: id, TTL: String(ttl) });
  }
}

function channel() {
  const streams: FakeStream[] = [];
  const ch = new KeepAliveChannel(async () => {
    const s = new FakeStream();
    streams.push(s);
    return s as never;
  });
  return { ch, streams };
}

const never = new AbortController().signal;
const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('etcd lease renewals on one kept stream', () => {
  it('renewals share one stream and get their answers in order', async () => {
    const { ch, streams } = channel();
    const first = ch.renew('7', never);
    await tick();
    const second = ch.renew('8', never);
    await tick();
    assert.equal(streams.length, 1);
    assert.deepEqual(streams[0]!.written, ['7', '8']);
    streams[0]!.answer('7', 6);
    streams[0]!.answer('8', 0);
    assert.equal(await first, 6);
    assert.equal(await second, 0, 'TTL 0: the lease is gone');
    const third = ch.renew('7', never);
    await tick();
    streams[0]!.answer('7', 6);
    assert.equal(await third, 6);
    assert.equal(streams.length, 1, 'still the same stream');
  });

  it('a renewal abandoned at its deadline closes the stream and fails the others; the next opens a new one, and a late answer is ignored', async () => {
    const { ch, streams } = channel();
    const deadline = new AbortController();
    const late = ch.renew('7', deadline.signal);
    await tick();
    const other = ch.renew('8', never);
    await tick();
    deadline.abort();
    await assert.rejects(late, /abandoned/);
    await assert.rejects(other, /abandoned/);
    assert.equal(streams[0]!.closed, true);
    streams[0]!.answer('7', 6);
    const next = ch.renew('9', never);
    await tick();
    assert.equal(streams.length, 2);
    assert.deepEqual(streams[1]!.written, ['9']);
    streams[1]!.answer('9', 6);
    assert.equal(await next, 6);
  });

  it('an error, an end or an unexpected answer fails what waits and closes the stream', async () => {
    const { ch, streams } = channel();
    const a = ch.renew('7', never);
    await tick();
    streams[0]!.emit('error', new Error('UNAVAILABLE'));
    await assert.rejects(a, /UNAVAILABLE/);
    const b = ch.renew('7', never);
    await tick();
    streams[1]!.answer('99', 6);
    await assert.rejects(b, /not expected/);
    const c = ch.renew('7', never);
    await tick();
    streams[2]!.emit('end');
    await assert.rejects(c, /ended/);
    assert.equal(streams.every((s) => s.closed), true);
  });
});
