/**
 * The connection start of relevo's replication client against a scripted
 * server on loopback (no PostgreSQL): a login with the password through the
 * one SCRAM client, and the servers it must refuse — one that signs without
 * the ServerKey, one that signs before any proof, one that skips the
 * signature. Refusals stay plain 'SCRAM: …' errors without a router code.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ReplicationConnection } from '../../src/postgres/replication-client.js';
import { scramVerifier } from '../../src/postgres/scram.js';
import { parseVerifier, ScramServer, type ScramVerifier } from '../../src/router/scram.js';
import { AuthCode, authentication, cstring, MessageSplitter, parseSaslInitial, readyForQuery } from '../../src/router/wire.js';

const PASSWORD = 'repl-pw';
const verifier = parseVerifier(scramVerifier(PASSWORD)) as ScramVerifier;

type Script = 'honest' | 'no-server-key' | 'signs-early' | 'skips-signature';

/** Replies to the SASL messages of one client as `script` says; the startup packet is skipped. */
function serve(socket: Socket, script: Script): void {
  const scram = new ScramServer(script === 'no-server-key' ? { ...verifier, serverKey: Buffer.alloc(32, 7) } : verifier);
  const splitter = new MessageSplitter();
  let startup: Buffer | undefined = Buffer.alloc(0);
  const ok = () => socket.write(Buffer.concat([authentication(AuthCode.Ok), readyForQuery(0x49)]));
  socket.on('error', () => {});
  socket.on('data', (chunk: Buffer) => {
    if (startup) {
      startup = Buffer.concat([startup, chunk]);
      if (startup.length < 4 || startup.length < startup.readInt32BE(0)) return;
      const rest = startup.subarray(startup.readInt32BE(0));
      startup = undefined;
      socket.write(authentication(AuthCode.SASL, Buffer.concat([cstring('SCRAM-SHA-256'), Buffer.from([0])])));
      if (rest.length === 0) return;
      chunk = rest;
    }
    splitter.push(chunk, (type, body) => {
      if (type !== 0x70) return;
      const payload = Buffer.from(body);
      if (payload.indexOf('SCRAM-SHA-256') === 0) {
        if (script === 'skips-signature') return ok();
        if (script === 'signs-early') {
          // The signature of empty keys over an empty message: public, so it proves nothing.
          socket.write(authentication(AuthCode.SASLFinal, Buffer.from(`v=${createHmac('sha256', Buffer.alloc(0)).update('').digest('base64')}`)));
          return ok();
        }
        socket.write(authentication(AuthCode.SASLContinue, Buffer.from(scram.first(parseSaslInitial(payload).data))));
        return;
      }
      socket.write(authentication(AuthCode.SASLFinal, Buffer.from(scram.final(payload.toString('utf8')).serverFinal)));
      ok();
    });
  });
}

describe('replication client: SCRAM at the connection start', () => {
  const servers = new Map<Script, Server>();
  before(async () => {
    for (const script of ['honest', 'no-server-key', 'signs-early', 'skips-signature'] as const) {
      const server = createServer((socket) => serve(socket, script));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      servers.set(script, server);
    }
  });
  after(() => {
    for (const server of servers.values()) server.close();
  });
  const open = (script: Script) =>
    ReplicationConnection.open({ host: '127.0.0.1', port: (servers.get(script)?.address() as AddressInfo).port, user: 'replicator', password: PASSWORD, applicationName: 'test', connectTimeoutMs: 5000 });

  it('logs in with the password when the server proves it holds the verifier', async () => {
    (await open('honest')).close();
  });

  for (const [script, what, message] of [
    ['no-server-key', 'signs without the ServerKey', /^SCRAM: server signature mismatch$/],
    ['signs-early', 'sends a signature before our proof', /^SCRAM: server signature mismatch$/],
    ['skips-signature', 'lets us in without a signature', /^SCRAM: the server ended the exchange without proving/],
  ] as const) {
    it(`refuses a server that ${what}`, async () => {
      // Closed if it ever opens, so a regression fails the test instead of holding it open.
      await assert.rejects(open(script).then((conn) => conn.close()), (error: Error & { code?: string }) => {
        assert.match(error.message, message);
        assert.equal(error.code, undefined);
        return true;
      });
    });
  }
});
