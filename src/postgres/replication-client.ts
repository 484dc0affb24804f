/**
 * A minimal client for PostgreSQL's physical replication protocol
 * (`replication=true` connection), enough for relevo's own BASE_BACKUP:
 * TLS the libpq `verify-full` way, SCRAM-SHA-256(-PLUS with
 * `channel_binding=require` semantics when TLS is on), simple queries, and a
 * message queue with backpressure (the socket is paused while the consumer
 * is behind, so a slow disk slows the server instead of filling memory).
 *
 * Why not node-postgres: it has no COPY OUT without an extra package, and
 * its replication mode is for logical decoding streams.
 */
import { connect as netConnect, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { ScramClient } from '../router/scram.js';
import { upgradeToServerTls } from '../router/server-tls.js';
import { MessageSplitter, message, parseErrorFields, readCStrings, saslInitialResponse, saslResponse, startupMessage, query as queryMessage } from '../router/wire.js';

export interface ReplicationTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  applicationName: string;
  /** The cluster CA: TLS verified against it and SCRAM bound to the channel; undefined: plaintext. */
  caPem?: string;
  connectTimeoutMs?: number;
}

export interface WireMessage {
  type: string;
  body: Buffer;
}

/** An ErrorResponse from the server, with its SQLSTATE. */
export class ServerError extends Error {
  constructor(
    message: string,
    readonly sqlState: string,
  ) {
    super(message);
  }
}

const HIGH_WATER = 512;
const LOW_WATER = 64;

export class ReplicationConnection {
  private readonly queue: WireMessage[] = [];
  private waiter: ((m: WireMessage | Error) => void) | undefined;
  private failure: Error | undefined;
  private readonly splitter = new MessageSplitter();
  private paused = false;
  readonly parameters = new Map<string, string>();

  private constructor(private readonly socket: Socket | TLSSocket) {
    socket.on('data', (chunk: Buffer) => {
      try {
        this.splitter.push(chunk, (type, body) => this.deliver({ type: String.fromCharCode(type), body: Buffer.from(body) }));
      } catch (error) {
        this.fail(error as Error);
      }
      if (this.queue.length > HIGH_WATER && !this.paused) {
        this.paused = true;
        socket.pause();
      }
    });
    socket.on('error', (error) => this.fail(error));
    socket.on('close', () => this.fail(new Error('the server closed the connection')));
  }

  private deliver(m: WireMessage): void {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter(m);
    } else this.queue.push(m);
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.(error);
  }

  /** The next message; an ErrorResponse is thrown as ServerError, NoticeResponse skipped. */
  async next(): Promise<WireMessage> {
    for (;;) {
      let m: WireMessage | Error;
      const queued = this.queue.shift();
      if (queued) m = queued;
      else if (this.failure) throw this.failure;
      else m = await new Promise<WireMessage | Error>((resolve) => (this.waiter = resolve));
      if (m instanceof Error) throw m;
      if (this.paused && this.queue.length < LOW_WATER) {
        this.paused = false;
        this.socket.resume();
      }
      if (m.type === 'N') continue;
      if (m.type === 'E') {
        const fields = parseErrorFields(m.body);
        throw new ServerError(`${fields.get('S') ?? 'ERROR'}: ${fields.get('M') ?? 'unknown error'}${fields.get('D') ? ` (${fields.get('D')})` : ''}`, fields.get('C') ?? '');
      }
      return m;
    }
  }

  send(data: Buffer): void {
    this.socket.write(data);
  }

  sendQuery(sql: string): void {
    this.send(queryMessage(sql));
  }

  close(): void {
    if (!this.socket.destroyed) {
      this.socket.end(message('X'));
      this.socket.destroy();
    }
  }

  /** Connects, negotiates TLS, authenticates and waits for ReadyForQuery. */
  static async open(target: ReplicationTarget): Promise<ReplicationConnection> {
    const { socket, binding } = await connectSocket(target);
    const conn = new ReplicationConnection(socket);
    try {
      conn.send(startupMessage(new Map([['user', target.user], ['replication', 'true'], ['application_name', target.applicationName]])));
      let scram: ScramClient | undefined;
      let serverProven = false;
      for (;;) {
        const m = await conn.next();
        if (m.type === 'R') {
          const code = m.body.readInt32BE(0);
          if (code === 0) continue;
          if (code === 10) {
            const offered = readCStrings(m.body.subarray(4)).filter((s) => s !== '');
            // With TLS, channel binding is required (libpq channel_binding=require): never downgrade to plain SCRAM.
            const want = binding ? 'SCRAM-SHA-256-PLUS' : 'SCRAM-SHA-256';
            if (!offered.includes(want)) throw new Error(`the server offers ${offered.join(', ') || 'no SASL mechanism'}, relevo requires ${want}`);
            // Refusals as plain errors (no router code): this is relevo's replication role, not the router.
            scram = new ScramClient({ password: target.password }, binding, (reason) => new Error(`SCRAM: ${reason}`));
            serverProven = false;
            conn.send(saslInitialResponse(scram.mechanism, scram.clientFirst));
          } else if (code === 11 && scram) {
            conn.send(saslResponse(scram.final(m.body.toString('utf8', 4))));
          } else if (code === 12 && scram) {
            scram.verify(m.body.toString('utf8', 4));
            serverProven = true;
          } else {
            throw new Error(`the server asks for authentication method ${code}; relevo's replication role uses SCRAM-SHA-256 only`);
          }
          continue;
        }
        if (m.type === 'S') {
          const [name, value] = readCStrings(m.body);
          if (name !== undefined) conn.parameters.set(name, value ?? '');
          continue;
        }
        if (m.type === 'K') continue;
        if (m.type === 'Z') {
          if (!scram) throw new Error('the server let the replication role in without a password (pg_hba trust?): refused, relevo requires SCRAM');
          // As the router's session mode: a server that never sent its signature proved nothing (nor bound the channel).
          if (!serverProven) throw new Error('SCRAM: the server ended the exchange without proving it knows the verifier: refused');
          return conn;
        }
        throw new Error(`unexpected message ${JSON.stringify(m.type)} during the connection start`);
      }
    } catch (error) {
      conn.close();
      throw error;
    }
  }
}

function connectSocket(target: ReplicationTarget): Promise<{ socket: Socket | TLSSocket; binding?: Buffer }> {
  return new Promise((resolve, reject) => {
    const plain = netConnect({ host: target.host, port: target.port });
    const timer = setTimeout(() => {
      plain.destroy();
      reject(new Error(`connecting to ${target.host}:${target.port} timed out`));
    }, target.connectTimeoutMs ?? 10_000);
    const failed = (error: Error) => {
      clearTimeout(timer);
      plain.destroy();
      reject(error);
    };
    plain.once('error', failed);
    plain.once('connect', () => {
      plain.setNoDelay(true);
      // A primary host lost mid-backup must not hang the clone forever (no FIN ever comes): TCP keepalives end it.
      plain.setKeepAlive(true, 10_000);
      if (!target.caPem) {
        clearTimeout(timer);
        plain.removeListener('error', failed);
        resolve({ socket: plain });
        return;
      }
      upgradeToServerTls(
        plain,
        target.host,
        target.caPem,
        (secure, binding) => {
          clearTimeout(timer);
          plain.removeListener('error', failed);
          resolve({ socket: secure, binding });
        },
        failed,
      );
    });
  });
}

/** Columns of a DataRow ('D'), text format; null for SQL NULL. */
export function dataRowValues(body: Buffer): (string | null)[] {
  const count = body.readInt16BE(0);
  const out: (string | null)[] = [];
  let at = 2;
  for (let i = 0; i < count; i++) {
    const len = body.readInt32BE(at);
    at += 4;
    if (len < 0) out.push(null);
    else {
      out.push(body.toString('utf8', at, at + len));
      at += len;
    }
  }
  return out;
}
