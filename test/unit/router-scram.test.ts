/**
 * SCRAM in both directions as session mode uses it: a client with the
 * password logs in to the router's ScramServer; the ClientKey the server
 * learns then logs in, as the same role, against a second server holding the
 * same verifier (what PostgreSQL does with pg_authid) — and only with it.
 * The same client with the clear password is relevo's replication connection's.
 */
import assert from 'node:assert/strict';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { scramVerifier } from '../../src/postgres/scram.js';
import { ScramClient, type ScramCredentials, ScramServer, parseVerifier, passwordKeys } from '../../src/router/scram.js';

/** An independent SCRAM client with a password (RFC 5802 §3), as libpq computes it. */
function passwordClient(password: string) {
  const nonce = randomBytes(18).toString('base64');
  const bare = `n=,r=${nonce}`;
  return {
    first: `n,,${bare}`,
    final(serverFirst: string): string {
      const a = Object.fromEntries(serverFirst.split(',').map((p) => [p[0], p.slice(2)]));
      const salted = pbkdf2Sync(password, Buffer.from(a.s!, 'base64'), Number(a.i), 32, 'sha256');
      const clientKey = createHmac('sha256', salted).update('Client Key').digest();
      const storedKey = createHash('sha256').update(clientKey).digest();
      const without = `c=biws,r=${a.r}`;
      const sig = createHmac('sha256', storedKey).update(`${bare},${serverFirst},${without}`).digest();
      const proof = Buffer.from(clientKey.map((b, i) => b ^ sig[i]!));
      return `${without},p=${proof.toString('base64')}`;
    },
  };
}

describe('router SCRAM', () => {
  const verifier = parseVerifier(scramVerifier('pw-1'))!;

  it('accepts the right password, learns the ClientKey, and logs in elsewhere with it', () => {
    const client = passwordClient('pw-1');
    const server = new ScramServer(verifier);
    const { clientKey, serverFinal } = server.final(client.final(server.first(client.first)));
    assert.match(serverFinal, /^v=/);
    // Pass-through: a server with the same verifier accepts a proof built from the ClientKey.
    const upstream = new ScramServer(verifier);
    const passThrough = new ScramClient({ verifier, clientKey });
    const upFirst = upstream.first(passThrough.clientFirst);
    const { serverFinal: upFinal } = upstream.final(passThrough.final(upFirst));
    passThrough.verify(upFinal);
  });

  it('refuses a wrong password and a verifier with another salt', () => {
    const client = passwordClient('wrong');
    const server = new ScramServer(verifier);
    assert.throws(() => server.final(client.final(server.first(client.first))), /wrong password/);
    const other = parseVerifier(scramVerifier('pw-1'))!; // same password, new salt
    const ok = passwordClient('pw-1');
    const s = new ScramServer(verifier);
    const { clientKey } = s.final(ok.final(s.first(ok.first)));
    const upstream = new ScramServer(other);
    const passThrough = new ScramClient({ verifier, clientKey });
    assert.throws(() => passThrough.final(upstream.first(passThrough.clientFirst)), /salt or iteration count differs/);
  });

  it('refuses channel binding it does not offer and malformed verifiers', () => {
    assert.throws(() => new ScramServer(verifier).first('p=tls-server-end-point,,n=,r=abc'), /channel binding/);
    assert.equal(parseVerifier('md5abcdef'), undefined);
    assert.equal(parseVerifier('plain password'), undefined);
  });

  it('binds to the TLS channel both ways (SCRAM-SHA-256-PLUS, tls-server-end-point)', () => {
    const binding = randomBytes(32);
    const ok = passwordClient('pw-1');
    const { clientKey } = (() => {
      const s = new ScramServer(verifier);
      return s.final(ok.final(s.first(ok.first)));
    })();
    // The router as a client of a server presenting `binding`: the server checks the same binding data.
    const upstream = new ScramServer(verifier, binding);
    const bound = new ScramClient({ verifier, clientKey }, binding);
    assert.equal(bound.mechanism, 'SCRAM-SHA-256-PLUS');
    const { serverFinal } = upstream.final(bound.final(upstream.first(bound.clientFirst, bound.mechanism)));
    bound.verify(serverFinal);
    // Another certificate on the way (a man in the middle): the binding differs and the proof is refused.
    const mitm = new ScramServer(verifier, randomBytes(32));
    const victim = new ScramClient({ verifier, clientKey }, binding);
    assert.throws(() => mitm.final(victim.final(mitm.first(victim.clientFirst, victim.mechanism))), /channel binding mismatch/);
    // -PLUS without TLS, and "y" (client thinks we cannot bind) while we offered it, are refused.
    assert.throws(() => new ScramServer(verifier).first(bound.clientFirst, 'SCRAM-SHA-256-PLUS'), /channel binding requested without TLS/);
    assert.throws(() => new ScramServer(verifier, binding).first(`y,,n=,r=abc`), /downgrade/);
  });
});

describe('SCRAM password client', () => {
  for (const bound of [false, true]) {
    it(`logs in against a server holding only the verifier${bound ? ', bound to the TLS channel (SCRAM-SHA-256-PLUS)' : ''}, and checks the server's signature`, () => {
      const password = 'pa:ss\'wörd';
      const verifier = parseVerifier(scramVerifier(password));
      assert.ok(verifier);
      const binding = bound ? createHash('sha256').update('certificate').digest() : undefined;
      const client = new ScramClient({ password }, binding);
      const server = new ScramServer(verifier, binding);
      const serverFirst = server.first(client.clientFirst, client.mechanism);
      const { serverFinal } = server.final(client.final(serverFirst));
      client.verify(serverFinal);
      assert.throws(() => client.verify('v=AAAA'), /signature mismatch/);

      const wrong = new ScramClient({ password: 'other' }, binding);
      const server2 = new ScramServer(verifier, binding);
      assert.throws(() => server2.final(wrong.final(server2.first(wrong.clientFirst, wrong.mechanism))), /wrong password/);
    });
  }
});

describe('one SCRAM client, from a password or from keys', () => {
  const password = 'pw-1';
  const verifier = parseVerifier(scramVerifier(password))!;
  const keys = passwordKeys(password, verifier.salt, verifier.iterations);
  const credentials: [string, ScramCredentials][] = [
    ['a password', { password }],
    ["a verifier's keys", { verifier, clientKey: keys.clientKey }],
  ];

  it('derives from the password the keys the verifier holds', () => {
    assert.deepEqual([keys.storedKey, keys.serverKey], [verifier.storedKey, verifier.serverKey]);
  });

  for (const [name, credential] of credentials) {
    for (const bound of [false, true]) {
      it(`logs in with ${name}${bound ? ', bound to the TLS channel' : ''}, and refuses a server that does not know the ServerKey`, () => {
        const binding = bound ? randomBytes(32) : undefined;
        const client = new ScramClient(credential, binding);
        assert.equal(client.mechanism, bound ? 'SCRAM-SHA-256-PLUS' : 'SCRAM-SHA-256');
        // Before final() there is nothing to check against: no signature, not even the one of empty keys, passes.
        for (const early of ['v=AAAA', '', `v=${createHmac('sha256', Buffer.alloc(0)).update('').digest('base64')}`]) {
          assert.throws(() => client.verify(early), { code: 'ROUTER_SCRAM', message: 'server signature mismatch' }, early);
        }
        const server = new ScramServer(verifier, binding);
        client.verify(server.final(client.final(server.first(client.clientFirst, client.mechanism))).serverFinal);

        // A server with a stolen StoredKey accepts the proof, but cannot sign as the ServerKey's holder.
        const impostor = new ScramServer({ ...verifier, serverKey: randomBytes(32) }, binding);
        const victim = new ScramClient(credential, binding);
        const { serverFinal } = impostor.final(victim.final(impostor.first(victim.clientFirst, victim.mechanism)));
        assert.throws(() => victim.verify(serverFinal), { code: 'ROUTER_SCRAM', message: 'server signature mismatch' });
      });
    }
    it(`with ${name}: refuses a server nonce that does not strictly extend ours, with the caller's error`, () => {
      const refuse = (reason: string) => Object.assign(new Error(`SCRAM: ${reason}`), { kind: 'caller' });
      const nonce = (c: ScramClient) => /r=([^,]*)/.exec(c.clientFirst)![1]!;
      const salt = `s=${verifier.salt.toString('base64')},i=${verifier.iterations}`;
      for (const serverNonce of [(ours: string) => ours, (ours: string) => `x${ours}y`, () => '']) {
        const client = new ScramClient(credential, undefined, refuse);
        assert.throws(() => client.final(`r=${serverNonce(nonce(client))},${salt}`), { kind: 'caller', message: 'SCRAM: the server nonce does not extend ours' });
      }
    });
  }

  it('refuses a malformed server-first-message (password) and another salt or iteration count (keys)', () => {
    for (const rest of ['s=c2FsdA==,i=0', 's=c2FsdA==,i=x', 'i=4096', 's=,i=4096']) {
      const client = new ScramClient({ password });
      const r = /r=([^,]*)/.exec(client.clientFirst)![1]!;
      assert.throws(() => client.final(`r=${r}theirs,${rest}`), { code: 'ROUTER_SCRAM', message: 'malformed server-first-message' }, rest);
    }
    for (const rest of [`s=c2FsdA==,i=${verifier.iterations}`, `s=${verifier.salt.toString('base64')},i=${verifier.iterations + 1}`]) {
      const client = new ScramClient({ verifier, clientKey: keys.clientKey });
      const r = /r=([^,]*)/.exec(client.clientFirst)![1]!;
      assert.throws(() => client.final(`r=${r}theirs,${rest}`), { code: 'ROUTER_SCRAM', message: /salt or iteration count differs/ }, rest);
    }
  });
});
