import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Framer,
  ProtocolError,
  RequestCode,
  errorResponse,
  parseStartupPacket,
  sessionIdle,
} from '../../src/router/protocol.js';

function msg(type: string, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  const out = Buffer.alloc(5 + b.length);
  out[0] = type.charCodeAt(0);
  out.writeUInt32BE(4 + b.length, 1);
  b.copy(out, 5);
  return out;
}

function keyData(pid: number, secret: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(pid, 0);
  b.writeUInt32BE(secret, 4);
  return msg('K', b);
}

function startup(params: Record<string, string>): Buffer {
  const body = Buffer.concat([
    ...Object.entries(params).map(([k, v]) => Buffer.from(`${k}\0${v}\0`)),
    Buffer.from([0]),
  ]);
  const out = Buffer.alloc(8 + body.length);
  out.writeUInt32BE(out.length, 0);
  out.writeUInt32BE(RequestCode.Startup30, 4);
  body.copy(out, 8);
  return out;
}

/** A backend stream: encryption answer, startup, one transaction, an error, idle. */
const backendStream = Buffer.concat([
  Buffer.from('N'),
  msg('R', Buffer.from([0, 0, 0, 0])),
  msg('S', 'server_version\x0015.8\x00'),
  keyData(0xdeadbeef, 0x01020304),
  msg('Z', 'I'),
  msg('C', 'BEGIN\0'),
  msg('Z', 'T'),
  msg('T', Buffer.alloc(300, 1)),
  msg('D', Buffer.alloc(70_000, 2)),
  msg('C', 'SELECT 1\0'),
  msg('Z', 'T'),
  errorResponse({ severity: 'ERROR', code: '42601', message: 'syntax error' }),
  msg('Z', 'E'),
  msg('C', 'ROLLBACK\0'),
  msg('Z', 'I'),
]);

const clientStream = Buffer.concat([
  startup({ user: 'app', database: 'app' }),
  msg('Q', 'BEGIN\0'),
  msg('Q', 'SELECT 1\0'),
  msg('P', '\0SELECT $1\0\0\0'),
  msg('B', Buffer.alloc(20)),
  msg('E', Buffer.alloc(5)),
  msg('S'),
  msg('Q', 'ROLLBACK\0'),
]);

function frameBackend(chunks: Buffer[]): Framer {
  const f = new Framer();
  f.expectEncryptionAnswer();
  for (const c of chunks) f.push(c);
  return f;
}

function frameClient(chunks: Buffer[]): Framer {
  const f = new Framer();
  f.expectUntypedPacket();
  for (const c of chunks) f.push(c);
  return f;
}

function assertBackend(f: Framer): void {
  assert.equal(f.encryptionAnswer, 'N'.charCodeAt(0));
  assert.equal(f.messages, 14);
  assert.equal(f.readyCount, 5);
  assert.equal(f.readyStatus, 'I'.charCodeAt(0));
  assert.equal(f.backendPid, 0xdeadbeef);
  assert.equal(f.backendSecret, 0x01020304);
  assert.equal(f.atBoundary, true);
}

function assertClient(f: Framer): void {
  assert.equal(f.messages, 8);
  assert.equal(f.syncCount, 4);
  assert.equal(f.atBoundary, true);
}

describe('Framer', () => {
  it('frames a backend stream split at every byte offset', () => {
    for (let cut = 0; cut <= backendStream.length; cut++) {
      // Skip most offsets inside the 70 kB DataRow body: they all take the same path.
      if (cut > 420 && cut < backendStream.length - 200 && cut % 997 !== 0) continue;
      assertBackend(frameBackend([backendStream.subarray(0, cut), backendStream.subarray(cut)]));
    }
  });

  it('frames the header region split at every pair of offsets', () => {
    // Three chunks with both cuts in the first 120 bytes: every header split combination there.
    for (let a = 0; a <= 120; a++) {
      for (let b = a; b <= 120; b++) {
        assertBackend(
          frameBackend([backendStream.subarray(0, a), backendStream.subarray(a, b), backendStream.subarray(b)]),
        );
      }
    }
  });

  it('frames byte by byte', () => {
    // A stream without the big DataRow, for a one-byte-at-a-time pass.
    const stream = Buffer.concat([
      Buffer.from('N'),
      msg('R', Buffer.from([0, 0, 0, 0])),
      keyData(7, 9),
      msg('Z', 'I'),
      msg('Z', 'T'),
      msg('Z', 'I'),
    ]);
    const f = new Framer();
    f.expectEncryptionAnswer();
    for (let i = 0; i < stream.length; i++) f.push(stream.subarray(i, i + 1));
    assert.equal(f.readyCount, 3);
    assert.equal(f.backendPid, 7);
    assert.equal(f.backendSecret, 9);
    assert.equal(f.readyStatus, 'I'.charCodeAt(0));
  });

  it('frames a client stream with an untyped startup packet, split at every offset', () => {
    for (let cut = 0; cut <= clientStream.length; cut++) {
      assertClient(frameClient([clientStream.subarray(0, cut), clientStream.subarray(cut)]));
    }
  });

  it('reports not-at-boundary inside a message and honours start/end', () => {
    const f = new Framer();
    const z = msg('Z', 'I');
    f.push(z, 0, 3);
    assert.equal(f.atBoundary, false);
    f.push(z, 3, 6);
    assert.equal(f.atBoundary, true);
    assert.equal(f.readyStatus, 'I'.charCodeAt(0));
  });

  it('rejects impossible lengths', () => {
    const f = new Framer();
    assert.throws(() => f.push(Buffer.from([0x5a, 0, 0, 0, 2])), ProtocolError);
    const g = new Framer();
    g.expectUntypedPacket();
    assert.throws(() => g.push(Buffer.from([0, 0, 0, 4])), ProtocolError);
  });
});

describe('sessionIdle', () => {
  it('is idle only when every sync has its ReadyForQuery and the last says I', () => {
    const client = new Framer();
    const backend = new Framer();
    client.expectUntypedPacket();
    client.push(startup({ user: 'u' }));
    assert.equal(sessionIdle(client, backend), false, 'before the startup ReadyForQuery');
    backend.push(msg('Z', 'I'));
    assert.equal(sessionIdle(client, backend), true);
    client.push(msg('Q', 'BEGIN\0'));
    assert.equal(sessionIdle(client, backend), false, 'query in flight');
    backend.push(Buffer.concat([msg('C', 'BEGIN\0'), msg('Z', 'T')]));
    assert.equal(sessionIdle(client, backend), false, 'inside a transaction');
    // Pipelined: two syncs sent, only the first answered.
    client.push(Buffer.concat([msg('Q', 'COMMIT\0'), msg('S')]));
    backend.push(msg('Z', 'I'));
    assert.equal(sessionIdle(client, backend), false, 'second sync still in flight');
    backend.push(msg('Z', 'I'));
    assert.equal(sessionIdle(client, backend), true);
    client.push(msg('Q', 'x').subarray(0, 3));
    assert.equal(sessionIdle(client, backend), false, 'half a client message');
  });
});

describe('parseStartupPacket', () => {
  it('recognises startup, SSL, GSSENC and cancel packets', () => {
    const s = startup({ user: 'u' });
    assert.equal(parseStartupPacket(s.subarray(0, s.length - 1)), undefined);
    assert.deepEqual(parseStartupPacket(s), { kind: 'startup', length: s.length, protocol: RequestCode.Startup30 });
    const ssl = Buffer.alloc(8);
    ssl.writeUInt32BE(8, 0);
    ssl.writeUInt32BE(RequestCode.SSL, 4);
    assert.equal(parseStartupPacket(ssl)?.kind, 'ssl');
    ssl.writeUInt32BE(RequestCode.GSSENC, 4);
    assert.equal(parseStartupPacket(ssl)?.kind, 'gssenc');
    const cancel = Buffer.alloc(16);
    cancel.writeUInt32BE(16, 0);
    cancel.writeUInt32BE(RequestCode.Cancel, 4);
    cancel.writeUInt32BE(42, 8);
    cancel.writeUInt32BE(77, 12);
    assert.deepEqual(parseStartupPacket(cancel), { kind: 'cancel', length: 16, pid: 42, secret: 77 });
  });

  it('rejects garbage early, before the whole packet arrives', () => {
    assert.throws(() => parseStartupPacket(Buffer.from('GET / HTTP/1.1\r\n')), ProtocolError);
    assert.throws(() => parseStartupPacket(Buffer.from([0, 0, 0, 3])), ProtocolError);
    const bad = Buffer.alloc(8);
    bad.writeUInt32BE(100, 0);
    bad.writeUInt32BE(12345, 4);
    assert.throws(() => parseStartupPacket(bad), ProtocolError);
  });
});

describe('errorResponse', () => {
  it('frames as one ErrorResponse message', () => {
    const e = errorResponse({ severity: 'FATAL', code: '57P03', message: 'no primary', hint: 'retry' });
    const f = new Framer();
    f.push(e);
    assert.equal(f.messages, 1);
    assert.equal(f.atBoundary, true);
    assert.ok(e.toString('utf8').includes('C57P03\0Mno primary\0Hretry\0'));
  });
});
