/**
 * The relay loop on real loopback sockets, no PostgreSQL: every byte arrives
 * intact and in order in both directions, also when the reader is slower than
 * the writer (writes queued by libuv, reading the other side paused), and the
 * router's byte counters see what it wrote around the streams.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { Relay, adoptClient, connectBackend } from '../../src/router/relay.js';

/** A typed message of `size` body bytes, filled from `seed`. */
function msg(type: string, size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(5 + size);
  b.write(type, 0, 'latin1');
  b.writeUInt32BE(size + 4, 1);
  for (let i = 0; i < size; i++) b[5 + i] = (seed + i * 7) & 0xff;
  return b;
}

function startup(): Buffer {
  const body = Buffer.from('user\0bench\0\0', 'latin1');
  const b = Buffer.allocUnsafe(8 + body.length);
  b.writeUInt32BE(b.length, 0);
  b.writeUInt32BE(196608, 4);
  body.copy(b, 8);
  return b;
}

/** Collects `total` bytes from a socket, pausing now and then (a slow reader); resolves with their hash. */
function drainSlowly(s: Socket, total: number): Promise<string> {
  const h = createHash('sha256');
  let got = 0;
  return new Promise((resolve, reject) => {
    s.on('error', reject);
    s.on('data', (chunk: Buffer) => {
      h.update(chunk);
      got += chunk.length;
      if (got >= total) resolve(h.digest('hex'));
      else if (Math.random() < 0.05) {
        s.pause();
        setTimeout(() => s.resume(), 2);
      }
    });
  });
}

async function listen(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

describe('relay', () => {
  it('relays large streams both ways intact, with slow readers on each side', async () => {
    const toClient = Array.from({ length: 400 }, (_, i) => msg('D', 1 + ((i * 7919) % 60_000), i));
    const toBackend = Array.from({ length: 300 }, (_, i) => msg('d', 1 + ((i * 104_729) % 50_000), i + 1));
    const expect = (parts: Buffer[]) => createHash('sha256').update(Buffer.concat(parts)).digest('hex');
    const downTotal = toClient.reduce((n, b) => n + b.length, 0);
    const upTotal = startup().length + toBackend.reduce((n, b) => n + b.length, 0);

    let backendGot: Promise<string> | undefined;
    const backendServer = createServer((s) => {
      backendGot = drainSlowly(s, upTotal);
      // The server writes everything at once: the relay's reads outrun the slow client.
      for (const b of toClient) s.write(b);
    });
    const backendPort = await listen(backendServer);

    let relay: Relay | undefined;
    const front = createServer({ pauseOnConnect: true, noDelay: true }, (accepted) => {
      const clientEnd = adoptClient(accepted);
      // What arrives before the relay exists is kept, as the listener keeps the first packet.
      const early: Buffer[] = [];
      clientEnd.onRead = (n, buf) => {
        early.push(Buffer.from(buf.subarray(0, n)));
        return true;
      };
      const backendEnd = connectBackend({ member: 'a', host: '127.0.0.1', port: backendPort, address: `127.0.0.1:${backendPort}` });
      backendEnd.socket.once('connect', () => {
        relay = new Relay(clientEnd, backendEnd, { member: 'a', host: '127.0.0.1', port: backendPort, address: `127.0.0.1:${backendPort}` }, true, { onClose: () => undefined }, 'startup');
        relay.start(Buffer.concat(early), 0);
      });
    });
    const frontPort = await listen(front);

    const client = connect(frontPort, '127.0.0.1');
    await once(client, 'connect');
    const clientGot = drainSlowly(client, downTotal);
    client.write(startup());
    for (const b of toBackend) client.write(b);

    assert.equal(await clientGot, expect(toClient), 'server → client intact');
    while (backendGot === undefined) await new Promise((r) => setImmediate(r));
    assert.equal(await backendGot, expect([startup(), ...toBackend]), 'client → server intact');
    assert.equal(relay!.bytesToClient, downTotal, 'bytes to the client counted');
    assert.equal(relay!.bytesFromClient, upTotal);

    client.destroy();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(relay!.isClosed, true, 'client gone: session closed');
    front.close();
    backendServer.close();
  });
});
