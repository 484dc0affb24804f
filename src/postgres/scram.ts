import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';

/**
 * SCRAM-SHA-256 verifier as PostgreSQL stores it (RFC 5802/7677). relevo sends
 * CREATE/ALTER ROLE with the verifier, so the clear password never reaches the
 * server's statement log.
 */
export function scramVerifier(password: string, iterations = 4096): string {
  const salt = randomBytes(16);
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

const hmac = (key: Buffer, text: string): Buffer => createHmac('sha256', key).update(text).digest();

/**
 * Client side of SCRAM-SHA-256 with the clear password (relevo's own
 * replication connection, where libpq is not used): client-first, then
 * client-final from server-first, then the server's signature checked.
 * `binding`: the server certificate's tls-server-end-point data, for
 * SCRAM-SHA-256-PLUS (as libpq's channel_binding=require).
 */
export class ScramPasswordClient {
  private readonly nonce = randomBytes(18).toString('base64');
  private readonly header: string;
  private serverKey: Buffer = Buffer.alloc(0);
  private authMessage = '';
  readonly mechanism: string;

  constructor(
    private readonly password: string,
    private readonly binding?: Buffer,
  ) {
    this.header = binding ? 'p=tls-server-end-point,,' : 'n,,';
    this.mechanism = binding ? 'SCRAM-SHA-256-PLUS' : 'SCRAM-SHA-256';
  }

  get clientFirst(): string {
    return `${this.header}n=,r=${this.nonce}`;
  }

  final(serverFirst: string): string {
    const attrs = new Map(serverFirst.split(',').map((part) => [part.slice(0, 1), part.slice(2)] as const));
    const nonce = attrs.get('r') ?? '';
    const salt = attrs.get('s');
    const iterations = Number(attrs.get('i'));
    if (!nonce.startsWith(this.nonce) || nonce.length === this.nonce.length) throw new Error('SCRAM: the server nonce does not extend ours');
    if (!salt || !Number.isInteger(iterations) || iterations < 1) throw new Error('SCRAM: malformed server-first-message');
    const salted = pbkdf2Sync(this.password.normalize('NFKC'), Buffer.from(salt, 'base64'), iterations, 32, 'sha256');
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = createHash('sha256').update(clientKey).digest();
    this.serverKey = hmac(salted, 'Server Key');
    const channel = (this.binding ? Buffer.concat([Buffer.from(this.header), this.binding]) : Buffer.from(this.header)).toString('base64');
    const withoutProof = `c=${channel},r=${nonce}`;
    this.authMessage = `n=,r=${this.nonce},${serverFirst},${withoutProof}`;
    const signature = hmac(storedKey, this.authMessage);
    const proof = Buffer.alloc(32);
    for (let i = 0; i < 32; i++) proof[i] = (clientKey[i] as number) ^ (signature[i] as number);
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** Throws unless the server proved it knows the verifier. */
  verify(serverFinal: string): void {
    const v = /(?:^|,)v=([^,]*)/.exec(serverFinal)?.[1];
    if (v !== hmac(this.serverKey, this.authMessage).toString('base64')) throw new Error('SCRAM: server signature mismatch');
  }
}
