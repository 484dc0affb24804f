/**
 * SCRAM-SHA-256 (RFC 5802/7677) as the session-mode router needs it, both
 * ways and without a clear password anywhere:
 *
 * - as a server, it checks a client's proof against the role's verifier
 *   (StoredKey/ServerKey, exactly what PostgreSQL keeps in pg_authid) and, in
 *   doing so, learns the client's ClientKey (proof XOR ClientSignature);
 * - as a client, it logs in to a PostgreSQL server *as that same role* with
 *   the ClientKey: the server's verifier has the same salt and iteration
 *   count, so a proof built from the ClientKey is valid. The ClientKey lives
 *   only in the router's memory for the life of the client session.
 *
 * The same client, given the clear password instead, is relevo's own
 * replication connection's (postgres/replication-client.ts): one SCRAM
 * client, whichever way it got its keys.
 *
 * Pure functions and small state objects: no I/O.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

export const SCRAM_MECHANISM = 'SCRAM-SHA-256';
/** The channel-bound variant (tls-server-end-point), offered and used only over TLS. */
export const SCRAM_PLUS = 'SCRAM-SHA-256-PLUS';
const BINDING_HEADER = 'p=tls-server-end-point,,';

export interface ScramVerifier {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

/** Parses "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>" (pg_authid.rolpassword). */
export function parseVerifier(text: string): ScramVerifier | undefined {
  const m = /^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(text.trim());
  if (!m) return undefined;
  const storedKey = Buffer.from(m[3] as string, 'base64');
  const serverKey = Buffer.from(m[4] as string, 'base64');
  if (storedKey.length !== 32 || serverKey.length !== 32) return undefined;
  return { iterations: Number(m[1]), salt: Buffer.from(m[2] as string, 'base64'), storedKey, serverKey };
}

const hmac = (key: Buffer, text: string): Buffer => createHmac('sha256', key).update(text).digest();
const sha256 = (data: Buffer): Buffer => createHash('sha256').update(data).digest();

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = (a[i] as number) ^ (b[i] as number);
  return out;
}

/** Attributes of a SCRAM message ("a=1,b=2"); values may contain '='. */
function attributes(message: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of message.split(',')) {
    if (part.length >= 2 && part[1] === '=') out.set(part[0] as string, part.slice(2));
  }
  return out;
}

export class ScramError extends Error {
  readonly code = 'ROUTER_SCRAM';
}

/**
 * Server side of one exchange. `first()` takes client-first-message and
 * returns server-first-message; `final()` takes client-final-message and
 * returns server-final-message plus the recovered ClientKey, or throws when
 * the proof is wrong.
 */
export class ScramServer {
  private clientFirstBare = '';
  private serverFirst = '';
  private nonce = '';
  private gs2Header = '';

  /**
   * `binding`: tls-server-end-point data of the certificate the router
   * presented to this client (TLS), undefined on plaintext.
   */
  constructor(
    private readonly verifier: ScramVerifier,
    private readonly binding?: Buffer,
  ) {}

  /** `mechanism` as the client chose it in SASLInitialResponse. */
  first(clientFirst: string, mechanism: string = SCRAM_MECHANISM): string {
    // gs2-header: "n,," (no binding), "y,," (client could bind, thinks the server cannot) or "p=tls-server-end-point,,".
    const m = /^(n|y|p=tls-server-end-point),(a=[^,]*)?,(.*)$/.exec(clientFirst);
    if (!m) throw new ScramError('unsupported channel binding type, or malformed client-first-message');
    const flag = m[1] as string;
    if ((flag.startsWith('p=') || mechanism === SCRAM_PLUS) && !(flag.startsWith('p=') && mechanism === SCRAM_PLUS && this.binding)) {
      throw new ScramError('channel binding requested without TLS, or mechanism and header disagree');
    }
    // "y" while we offered -PLUS: someone stripped the offer on the way (RFC 5802 downgrade check).
    if (flag === 'y' && this.binding) throw new ScramError('channel binding downgrade');
    this.gs2Header = `${flag},${m[2] ?? ''},`;
    this.clientFirstBare = m[3] as string;
    const clientNonce = attributes(this.clientFirstBare).get('r');
    if (!clientNonce) throw new ScramError('client-first-message has no nonce');
    this.nonce = clientNonce + randomBytes(18).toString('base64');
    this.serverFirst = `r=${this.nonce},s=${this.verifier.salt.toString('base64')},i=${this.verifier.iterations}`;
    return this.serverFirst;
  }

  final(clientFinal: string): { serverFinal: string; clientKey: Buffer } {
    const attrs = attributes(clientFinal);
    const proofText = attrs.get('p');
    if (attrs.get('r') !== this.nonce || proofText === undefined) throw new ScramError('nonce mismatch or no proof');
    const bound = this.gs2Header.startsWith('p=') ? Buffer.concat([Buffer.from(this.gs2Header), this.binding as Buffer]) : Buffer.from(this.gs2Header);
    if (attrs.get('c') !== bound.toString('base64')) throw new ScramError('channel binding mismatch');
    const withoutProof = clientFinal.slice(0, clientFinal.lastIndexOf(',p='));
    const authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
    const proof = Buffer.from(proofText, 'base64');
    if (proof.length !== 32) throw new ScramError('malformed proof');
    const clientKey = xor(proof, hmac(this.verifier.storedKey, authMessage));
    if (!timingSafeEqual(sha256(clientKey), this.verifier.storedKey)) throw new ScramError('wrong password');
    const serverSignature = hmac(this.verifier.serverKey, authMessage);
    return { serverFinal: `v=${serverSignature.toString('base64')}`, clientKey };
  }
}

/**
 * What a SCRAM client logs in with:
 *
 * - the clear password (relevo's own replication connection, where libpq is
 *   not used): the keys are derived with the salt and iteration count the
 *   server sends;
 * - a ClientKey with the role's verifier (session-mode pass-through to the
 *   server as the same role): the server's salt and iteration count must be
 *   the verifier's, or the keys differ — that is checked and reported.
 */
export type ScramCredentials = { password: string } | { verifier: ScramVerifier; clientKey: Buffer };

/** ClientKey, StoredKey (its hash) and ServerKey of RFC 5802 §3. */
export interface ScramKeys {
  clientKey: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

/** The keys of a clear password, as the server derived its verifier (SaltedPassword = PBKDF2-SHA-256). */
export function passwordKeys(password: string, salt: Buffer, iterations: number): ScramKeys {
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = hmac(salted, 'Client Key');
  return { clientKey, storedKey: sha256(clientKey), serverKey: hmac(salted, 'Server Key') };
}

/**
 * Client side of one exchange: `clientFirst`, then `final()` from
 * server-first-message, then `verify()` of the server's signature — the
 * server proves it knows the verifier. `binding`: the server certificate's
 * tls-server-end-point data (TLS): SCRAM-SHA-256-PLUS, as libpq's
 * channel_binding=require. `refuse` makes the error of each refusal (the
 * router's ScramError unless the caller has its own).
 */
export class ScramClient {
  private readonly clientNonce = randomBytes(18).toString('base64');
  readonly clientFirst: string;
  readonly mechanism: string;
  private readonly channel: string;
  /** The server signature we expect; known only once final() has built our proof. */
  private expected: string | undefined;

  constructor(
    private readonly credentials: ScramCredentials,
    binding?: Buffer,
    private readonly refuse: (message: string) => Error = (message) => new ScramError(message),
  ) {
    const header = binding ? BINDING_HEADER : 'n,,';
    this.mechanism = binding ? SCRAM_PLUS : SCRAM_MECHANISM;
    this.channel = (binding ? Buffer.concat([Buffer.from(header), binding]) : Buffer.from(header)).toString('base64');
    this.clientFirst = `${header}n=,r=${this.clientNonce}`;
  }

  final(serverFirst: string): string {
    const attrs = attributes(serverFirst);
    const nonce = attrs.get('r') ?? '';
    // RFC 5802: the server's nonce is ours with its own part appended; anything else is not a SCRAM server.
    if (!nonce.startsWith(this.clientNonce) || nonce.length === this.clientNonce.length) throw this.refuse('the server nonce does not extend ours');
    const keys = this.keys(attrs.get('s'), Number(attrs.get('i')));
    const withoutProof = `c=${this.channel},r=${nonce}`;
    const authMessage = `n=,r=${this.clientNonce},${serverFirst},${withoutProof}`;
    this.expected = hmac(keys.serverKey, authMessage).toString('base64');
    const proof = xor(keys.clientKey, hmac(keys.storedKey, authMessage));
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** Throws unless the server proved it knows the verifier (and always before final(): nothing to check against yet). */
  verify(serverFinal: string): void {
    const v = attributes(serverFinal).get('v');
    if (this.expected === undefined || v !== this.expected) throw this.refuse('server signature mismatch');
  }

  private keys(salt: string | undefined, iterations: number): ScramKeys {
    if ('password' in this.credentials) {
      if (!salt || !Number.isInteger(iterations) || iterations < 1) throw this.refuse('malformed server-first-message');
      return passwordKeys(this.credentials.password, Buffer.from(salt, 'base64'), iterations);
    }
    const { verifier, clientKey } = this.credentials;
    if (salt !== verifier.salt.toString('base64') || iterations !== verifier.iterations) {
      throw this.refuse("the server's SCRAM salt or iteration count differs from the router's verifier (the role's password changed?)");
    }
    return { clientKey, storedKey: verifier.storedKey, serverKey: verifier.serverKey };
  }
}
