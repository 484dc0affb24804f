/**
 * Session mode: the router terminates the client side of the PostgreSQL
 * protocol, so a client session outlives the server session behind it.
 *
 * - The client authenticates to the router with SCRAM-SHA-256 against the
 *   role's verifier (verifiers.ts); TLS with the router's certificate when
 *   configured. The router logs in to the server as the same role with the
 *   ClientKey learnt from the client's proof (scram.ts): no password anywhere.
 * - While attached, bytes go through in whole messages; the router tracks the
 *   transaction status (ReadyForQuery), the parameters the client was told
 *   (ParameterStatus) and the named prepared statements (Parse/Close).
 * - To move (planned switchover), it waits until the session is idle between
 *   transactions, asks the old server what session state exists (SET values,
 *   SQL and protocol prepared statements, and what cannot move: temporary
 *   tables, advisory locks, LISTEN, held cursors), detaches, and later attaches
 *   to the new primary and replays the state. The client notices nothing.
 * - A server lost under an idle session: the session simply re-attaches. A
 *   server lost with a request in flight or inside a transaction: the client
 *   gets a retryable ERROR (57P01 with a hint) for that request, and the
 *   session itself goes on on the new server.
 */
import { connect, type Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import { randomBytes, randomInt } from 'node:crypto';
import { writeDirect } from './direct-write.js';
import { closure, refusal, type ClosureCode, type Refusal } from './errors.js';
import { ENCRYPTION_REFUSED, ProtocolError, TxStatus, errorResponse, parseStartupPacket, TERMINATE, type ErrorFields } from './protocol.js';
import { endPointHash, upgradeToServerTls } from './server-tls.js';
import { SCRAM_MECHANISM, SCRAM_PLUS, ScramClient, ScramServer, parseVerifier, type ScramVerifier } from './scram.js';
import type { Backend, Decision } from './view.js';
import type { PooledServer, ServerPool } from './pool.js';
import {
  AuthCode,
  MessageSplitter,
  SYNC,
  authentication,
  backendKeyData,
  cstring,
  literal,
  message,
  parameterStatus,
  parseErrorFields,
  parseSaslInitial,
  parseStartupParams,
  query,
  readCStrings,
  readyForQuery,
  saslInitialResponse,
  saslResponse,
  startupMessage,
} from './wire.js';

export interface SessionContext {
  decide(): Decision;
  verifier(user: string): ScramVerifier | undefined;
  /** Server-side TLS for clients that ask for it; undefined = answer 'N'. */
  tls: { get(): SecureContext } | undefined;
  /** The cluster CA the servers are verified against (verify-full + channel binding); undefined = plaintext to the servers. */
  serverCa?: { get(): string } | undefined;
  timeouts: { startupMs: number; connectMs: number; holdMs: number };
  now(): number;
  /** A CancelRequest for a router-issued key. */
  cancel(pid: number, secret: number): void;
  register(session: Session): void;
  unregister(session: Session): void;
  attached(session: Session, member: string, delta: 1 | -1): void;
  refused(code: Refusal['code']): void;
  held(): void;
  /** Session pooling, when configured: server sessions are reused across client sessions. */
  pool?: ServerPool;
  /**
   * One session at a time tries a lease holder that has not published its
   * promotion (the scout); the others wait for it, so a promotion does not
   * meet a backend fork per parked session every few milliseconds.
   */
  scouting(member: string): boolean;
  /** A scout starts, or ends (`through`: it found the server taking writes). */
  scout(member: string, active: boolean, through?: boolean): void;
}

/** Server sessions are interchangeable only with the same member, role, database and startup parameters. */
function poolKey(member: string, params: Map<string, string>): string {
  return JSON.stringify([member, ...[...params].sort(([a], [b]) => (a < b ? -1 : 1))]);
}

/** What the old server said about the session just before it moved. */
interface SessionState {
  settings: Array<[string, string]>;
  sqlPrepared: string[];
  protocolPrepared: Set<string>;
}

/** Why a session cannot move, in the words the client sees. */
const PROBE_SQL =
  'SELECT ' +
  "(SELECT count(*) FROM pg_catalog.pg_class WHERE relpersistence = 't' AND relnamespace = pg_catalog.pg_my_temp_schema())," +
  "(SELECT count(*) FROM pg_catalog.pg_locks WHERE pid = pg_catalog.pg_backend_pid() AND locktype = 'advisory')," +
  '(SELECT count(*) FROM pg_catalog.pg_listening_channels()),' +
  '(SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable),' +
  "(SELECT coalesce(json_agg(json_build_array(name, pg_catalog.current_setting(name))), '[]') FROM pg_catalog.pg_settings WHERE source = 'session')," +
  "(SELECT coalesce(json_agg(statement), '[]') FROM pg_catalog.pg_prepared_statements WHERE from_sql)," +
  "(SELECT coalesce(json_agg(name), '[]') FROM pg_catalog.pg_prepared_statements WHERE NOT from_sql)";

/**
 * Statements that change session state the router only learns by asking the
 * server (at a planned move). After one of them, a server lost without warning
 * (failover) leaves the session's state unknown, and the session is closed
 * rather than continued with settings silently missing.
 */
/**
 * Client message types the router reads the body of (onClientMessage):
 * Terminate, Parse, Query, Close, and the password/SASL message. Every other
 * type passes through an active session unread.
 */
const READ_FROM_CLIENT: boolean[] = [];
for (const t of [0x58, 0x50, 0x51, 0x43, 0x70]) READ_FROM_CLIENT[t] = true;

const STATE_CHANGING = /^\s*(set|reset|prepare|deallocate|discard|listen|create\s+(global\s+|local\s+)?temp)|pg_advisory|pg_try_advisory/i;

const IDENTITY = new Set(['session_authorization', 'role']);

/** Client bytes queued while the session has no server (parked or moving). */
const MAX_QUEUED = 1024 * 1024;

type Phase = 'startup' | 'auth' | 'waiting' | 'attaching' | 'active' | 'probing' | 'parked' | 'closed';

export class Session {
  private phase: Phase = 'startup';
  private client: Socket;
  private backend: Socket | undefined;
  private startupBuf = Buffer.alloc(0);
  private params = new Map<string, string>();
  private verifier: ScramVerifier | undefined;
  private scram: ScramServer | undefined;
  private clientKey: Buffer | undefined;
  private readonly fromClient = new MessageSplitter();
  private fromBackend = new MessageSplitter();
  private timer: NodeJS.Timeout | undefined;
  private moveTimer: NodeJS.Timeout | undefined;
  private heldSince: number | undefined;
  /** Requests (Query/Sync/FunctionCall) sent to the current server and not yet answered by ReadyForQuery. */
  private outstanding = 0;
  private txStatus = TxStatus.Idle as number;
  /** Parameters as the client was last told them. */
  private readonly clientParams = new Map<string, string>();
  /** Parameters as the current server reports them. */
  private serverParams = new Map<string, string>();
  /** Named protocol-level prepared statements: the Parse message, to re-send. */
  private readonly prepared = new Map<string, Buffer>();
  private queued: Buffer[] = [];
  private queuedBytes = 0;
  /** Requests among the queued bytes (they count as outstanding once sent). */
  private queuedRequests = 0;
  /** The server was lost inside a transaction: answer the client's next request with an error. */
  private failNext: ErrorFields | undefined;
  private moveRequested: { fields: ErrorFields; reason: ClosureCode } | undefined;
  /** State to replay on the next server (from the last probe). */
  private state: SessionState | undefined;
  /** The last state known to be on the server: replayed after an unplanned loss, if still true. */
  private baseline: SessionState = { settings: [], sqlPrepared: [], protocolPrepared: new Set() };
  /** No SET/PREPARE/... since the baseline. */
  private stateKnown = true;
  /** What the last probe found that cannot move (temporary tables, ...): an unplanned loss closes the session. */
  private unmovable: string[] = [];
  private backendPid = 0;
  private backendSecret = 0;
  /** The key this client got in BackendKeyData: the router's own, stable across moves. */
  readonly key = { pid: randomInt(1, 0x7fffffff), secret: randomInt(1, 0x7fffffff) };
  target: Backend | undefined;
  primary = false;
  closedBy: string | undefined;
  /** Times this session was moved to another server. */
  moves = 0;

  constructor(
    socket: Socket,
    private readonly ctx: SessionContext,
  ) {
    this.client = socket;
    this.listenClient();
    this.timer = setTimeout(() => this.refuse(refusal('startup-timeout', { timeoutMs: ctx.timeouts.startupMs })), ctx.timeouts.startupMs);
    ctx.register(this);
  }

  get isClosed(): boolean {
    return this.phase === 'closed';
  }

  /** Between transactions with nothing in flight in either direction. */
  get idle(): boolean {
    return (this.phase === 'active' || this.phase === 'parked') && this.outstanding === 0 && this.txStatus === TxStatus.Idle &&
      this.fromBackend.pending === 0 && this.queuedBytes === 0;
  }

  get waitingForServer(): boolean {
    return this.phase === 'waiting' || this.phase === 'parked';
  }

  get bytesFromClient(): number {
    return this.client.bytesRead;
  }

  get bytesToClient(): number {
    return this.client.bytesWritten;
  }

  private listenClient(): void {
    this.client.on('data', (chunk: Buffer) => this.onClientData(chunk));
    this.client.on('error', () => this.finish('client-gone'));
    this.client.on('close', () => this.finish('client-gone'));
    this.client.on('end', () => this.finish('client-gone'));
    this.client.resume();
  }

  // ---- startup and authentication ----------------------------------------

  private onClientData(chunk: Buffer): void {
    if (this.phase === 'closed') return;
    if (this.phase === 'startup') {
      this.onStartupBytes(chunk);
      return;
    }
    // Messages the router answers itself (authentication, Terminate, a lost transaction's) are cut out.
    this.dropped = undefined;
    let whole: Buffer;
    try {
      whole = this.fromClient.scan(chunk, this.eachClientMessage);
    } catch (error) {
      this.close({ severity: 'FATAL', code: '08P01', message: `relevo router: ${(error as ProtocolError).message}` }, 'protocol-error');
      return;
    }
    if (this.isClosed) return;
    const dropped = this.dropped as Array<[number, number]> | undefined;
    if (dropped === undefined) {
      if (whole.length > 0) this.toServer(whole);
      return;
    }
    let at = 0;
    for (const [from, to] of dropped) {
      if (from > at) this.toServer(whole.subarray(at, from));
      at = to;
    }
    if (at < whole.length) this.toServer(whole.subarray(at));
  }

  /** Ranges of the current client chunk the router answers itself (onClientData). */
  private dropped: Array<[number, number]> | undefined;

  /**
   * One client message (MessageSplitter.scan). A body is sliced only for
   * the messages the router reads; Bind, Execute, Sync, Describe and the
   * like pass with a counter at most.
   */
  private readonly eachClientMessage = (type: number, data: Buffer, at: number, end: number): void => {
    let pass: boolean;
    if (this.phase === 'active' && this.failNext === undefined && !READ_FROM_CLIENT[type]) {
      if (type === 0x53 || type === 0x46) this.outstanding += 1;
      pass = true;
    } else {
      pass = this.onClientMessage(type, data.subarray(at + 5, end));
    }
    if (!pass) (this.dropped ??= []).push([at, end]);
  };

  private onStartupBytes(chunk: Buffer): void {
    this.startupBuf = this.startupBuf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.startupBuf, chunk]);
    let packet;
    try {
      packet = parseStartupPacket(this.startupBuf);
    } catch (error) {
      this.refuse(refusal('bad-startup', { error: (error as ProtocolError).message }));
      return;
    }
    if (!packet) return;
    const bytes = this.startupBuf.subarray(0, packet.length);
    this.startupBuf = Buffer.from(this.startupBuf.subarray(packet.length));
    if (packet.kind === 'cancel') {
      this.ctx.cancel(packet.pid, packet.secret);
      this.finish('cancel');
      return;
    }
    if (packet.kind === 'ssl' && this.ctx.tls && !(this.client instanceof TLSSocket)) {
      this.startTls();
      return;
    }
    if (packet.kind === 'ssl' || packet.kind === 'gssenc') {
      this.client.write(ENCRYPTION_REFUSED);
      if (this.startupBuf.length > 0) this.onStartupBytes(Buffer.alloc(0));
      return;
    }
    this.params = parseStartupParams(bytes);
    if (this.params.has('replication')) {
      this.refuseWith({ severity: 'FATAL', code: '0A000', message: 'relevo router: replication connections are not supported in session mode' });
      return;
    }
    const user = this.params.get('user') ?? '';
    if (!this.params.has('database')) this.params.set('database', user);
    this.phase = 'auth';
    // An unknown role runs the same exchange against a random verifier, so a
    // client cannot tell unknown roles from wrong passwords.
    this.verifier = this.ctx.verifier(user) ?? decoyVerifier();
    // Over TLS the router also offers SCRAM-SHA-256-PLUS, bound to the certificate it presented.
    const own = this.client instanceof TLSSocket ? (this.client.getCertificate() as { raw?: Buffer } | null) : null;
    const binding = own?.raw ? endPointHash(own.raw) : undefined;
    this.scram = new ScramServer(this.verifier, binding);
    const mechanisms = binding ? [SCRAM_PLUS, SCRAM_MECHANISM] : [SCRAM_MECHANISM];
    this.client.write(authentication(AuthCode.SASL, Buffer.concat([...mechanisms.map(cstring), Buffer.from([0])])));
    if (this.startupBuf.length > 0) {
      const rest = this.startupBuf;
      this.startupBuf = Buffer.alloc(0);
      this.onClientData(rest);
    }
  }

  private startTls(): void {
    const plain = this.client;
    plain.removeAllListeners('data');
    plain.removeAllListeners('end');
    plain.removeAllListeners('close');
    plain.removeAllListeners('error');
    plain.on('error', () => undefined);
    plain.write('S');
    const secure = new TLSSocket(plain, { isServer: true, secureContext: this.ctx.tls!.get() });
    this.client = secure;
    this.listenClient();
  }

  /** Handles one complete client message; false = do not forward it. */
  private onClientMessage(type: number, body: Buffer): boolean {
    if (this.phase === 'auth') {
      this.onAuthMessage(type, body);
      return false;
    }
    if (this.phase !== 'active' && this.phase !== 'parked' && this.phase !== 'probing' && this.phase !== 'attaching') {
      // Before the session is ready a client has nothing to say.
      this.close({ severity: 'FATAL', code: '08P01', message: 'relevo router: unexpected message before the session was ready' }, 'protocol-error');
      return false;
    }
    switch (type) {
      case 0x58: // Terminate
        this.finish('client-terminate');
        return false;
      case 0x50: { // Parse: remember named statements
        const end = body.indexOf(0);
        const name = body.toString('utf8', 0, end);
        if (name !== '') this.prepared.set(name, message('P', Buffer.from(body)));
        if (STATE_CHANGING.test(body.toString('utf8', end + 1, Math.min(body.length, end + 4097)))) this.stateChanged();
        break;
      }
      case 0x51: // Query
        if (STATE_CHANGING.test(body.toString('utf8', 0, Math.min(body.length, 4096)))) this.stateChanged();
        break;
      case 0x43: // Close: 'S' statement
        if (body[0] === 0x53) this.prepared.delete(body.toString('utf8', 1, body.indexOf(0, 1)));
        break;
    }
    if (this.failNext !== undefined) {
      // The transaction died with the old server: swallow up to the next Sync/Query and answer it with the error.
      if (type === 0x51 || type === 0x53 || type === 0x46) {
        this.client.write(Buffer.concat([errorResponse(this.failNext), readyForQuery(TxStatus.Idle)]));
        this.failNext = undefined;
      }
      return false;
    }
    if (type === 0x51 || type === 0x53 || type === 0x46) {
      if (this.phase === 'active') this.outstanding += 1;
      else this.queuedRequests += 1;
    }
    return true;
  }

  private onAuthMessage(type: number, body: Buffer): void {
    const fail = (): void =>
      this.refuseWith({ severity: 'FATAL', code: '28P01', message: `password authentication failed for user "${this.params.get('user') ?? ''}"` });
    if (type !== 0x70 || !this.scram) {
      fail();
      return;
    }
    try {
      if (this.clientKey === undefined && !this.scramFirstDone) {
        const { mechanism, data } = parseSaslInitial(body);
        if (mechanism !== SCRAM_MECHANISM && mechanism !== SCRAM_PLUS) throw new Error('mechanism');
        this.client.write(authentication(AuthCode.SASLContinue, Buffer.from(this.scram.first(data, mechanism))));
        this.scramFirstDone = true;
        return;
      }
      const { serverFinal, clientKey } = this.scram.final(body.toString('utf8'));
      if (this.ctx.verifier(this.params.get('user') ?? '') !== this.verifier) throw new Error('unknown role');
      this.clientKey = clientKey;
      this.client.write(authentication(AuthCode.SASLFinal, Buffer.from(serverFinal)));
    } catch {
      fail();
      return;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    this.phase = 'waiting';
    this.tryAttach();
  }

  private scramFirstDone = false;

  // ---- finding and attaching a server ------------------------------------

  /** Attaches to the server the router picks now, or waits (held) until it can. */
  tryAttach(): void {
    if (this.phase !== 'waiting' && this.phase !== 'parked') return;
    const d = this.ctx.decide();
    if (d.action === 'refuse') {
      if (this.clientParams.size === 0) this.refuse(d.refusal);
      else if (d.refusal.code !== 'no-primary') this.close({ ...d.refusal.fields }, d.refusal.code);
      else this.hold();
      return;
    }
    if (d.action === 'hold' || (d.promoting && this.ctx.scouting(d.backend.member))) {
      this.hold();
      return;
    }
    if (this.heldSince !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.heldSince = undefined;
    }
    this.attach(d.backend, d.primary, d.promoting === true);
  }

  private hold(): void {
    if (this.heldSince !== undefined) return;
    this.heldSince = this.ctx.now();
    this.ctx.held();
    this.timer = setTimeout(() => {
      const heldMs = this.ctx.now() - (this.heldSince ?? 0);
      const r = refusal('hold-timeout', { heldMs, reason: 'no primary to attach the session to' });
      if (this.clientParams.size === 0) this.refuse(r);
      else this.close(r.fields, 'hold-timeout');
    }, this.ctx.timeouts.holdMs);
  }

  /** The pool slot (key) the current server session is counted under. */
  private slotKey: string | undefined;
  private cancelPoolWait: (() => void) | undefined;
  /** ReadyForQuery still expected before the server is ready: -1 = startup not done yet. */
  private replayPending = -1;

  private attach(target: Backend, primary: boolean, promoting = false): void {
    const first = this.clientParams.size === 0;
    let pooled: PooledServer | undefined;
    const pool = this.ctx.pool;
    if (pool) {
      const key = poolKey(target.member, this.params);
      const got = pool.acquire(key);
      if (got === undefined) {
        // Every server session of this kind is in use: wait for one (bounded by holdMs).
        this.hold();
        this.cancelPoolWait?.();
        this.cancelPoolWait = pool.wait(key, () => {
          this.cancelPoolWait = undefined;
          this.tryAttach();
        });
        return;
      }
      this.slotKey = key;
      if (got !== 'open') pooled = got;
    }
    this.phase = 'attaching';
    this.target = target;
    this.primary = primary;
    if (promoting) {
      this.scouting = target.member;
      this.ctx.scout(target.member, true);
    }
    this.ctx.attached(this, target.member, 1);
    const plain = pooled ? pooled.socket : connect({ host: target.host, port: target.port, noDelay: true });
    this.backend = plain;
    this.fromBackend = new MessageSplitter();
    this.serverParams = pooled ? new Map(pooled.params) : new Map();
    this.outstanding = 0;
    this.txStatus = TxStatus.Idle;
    this.replayPending = -1;
    const serverCa = pooled ? undefined : this.ctx.serverCa;
    // Replaced, bound to the server's certificate, once TLS is up.
    let scram = new ScramClient({ verifier: this.verifier as ScramVerifier, clientKey: this.clientKey as Buffer });
    let serverProven = false;
    const connectTimer = pooled
      ? undefined
      : setTimeout(() => this.backend?.destroy(new Error(`timed out after ${this.ctx.timeouts.connectMs} ms`)), this.ctx.timeouts.connectMs);
    const failAttach = (fields: ErrorFields, code: ClosureCode | Refusal['code']): void => {
      clearTimeout(connectTimer);
      this.dropBackend();
      if (first) this.refuseWith(fields, code);
      else this.close(fields, code);
    };
    const onError = (socket: Socket, error: Error): void => {
      if (this.backend !== socket) return;
      if (this.phase === 'attaching') {
        clearTimeout(connectTimer);
        if (this.retryAttach()) this.dropBackend();
        else failAttach(refusal('backend-unreachable', { member: target.member, address: target.address, error: error.message }).fields, 'backend-unreachable');
      } else {
        this.serverLost();
      }
    };
    if (!pooled) {
      plain.once('connect', () => {
        if (!serverCa) {
          clearTimeout(connectTimer);
          plain.write(startupMessage(this.params));
          return;
        }
        upgradeToServerTls(
          plain,
          target.host,
          serverCa.get(),
          (secure, binding) => {
            if (this.backend !== plain) {
              secure.destroy();
              return;
            }
            clearTimeout(connectTimer);
            scram = new ScramClient({ verifier: this.verifier as ScramVerifier, clientKey: this.clientKey as Buffer }, binding);
            this.backend = secure;
            wire(secure);
            secure.write(startupMessage(this.params));
          },
          (error) => onError(plain, error),
        );
      });
    }
    const wire = (socket: Socket): void => {
      socket.on('error', (error) => onError(socket, error));
      socket.on('close', () => {
        if (this.backend === socket) this.serverLost();
      });
      socket.on('data', (chunk: Buffer) => {
        if (this.backend !== socket) return;
        if (this.phase !== 'attaching') {
          this.onServerData(chunk);
          return;
        }
        try {
          this.fromBackend.push(chunk, (type, body) => {
            if (this.phase !== 'attaching' || this.backend !== socket) return;
            if (type === 0x52) {
              const code = body.readInt32BE(0);
              if (code === AuthCode.SASL) {
                if (!readCStrings(body.subarray(4)).includes(scram.mechanism)) {
                  throw new Error(`member ${target.member} does not offer ${scram.mechanism}; session mode needs scram-sha-256 on the servers (and channel binding over TLS)`);
                }
                socket.write(saslInitialResponse(scram.mechanism, scram.clientFirst));
              } else if (code === AuthCode.SASLContinue) socket.write(saslResponse(scram.final(body.toString('utf8', 4))));
              else if (code === AuthCode.SASLFinal) {
                scram.verify(body.toString('utf8', 4));
                serverProven = true;
              } else if (code === AuthCode.Ok && !serverProven) {
                // A server that skipped SCRAM proved nothing (it need not hold the ServerKey): with TLS as libpq's
                // channel_binding=require; over plain TCP too, since relevo's servers always ask for scram-sha-256.
                throw new Error(`member ${target.member} accepted the session without SCRAM; session mode needs scram-sha-256 on the servers`);
              } else if (code !== AuthCode.Ok) {
                throw new Error(`member ${target.member} asks for authentication method ${code}; session mode needs scram-sha-256 on the servers`);
              }
            } else if (type === 0x53) {
              const [name, value] = readCStrings(body);
              this.serverParams.set(name as string, value as string);
            } else if (type === 0x4b) {
              this.backendPid = body.readInt32BE(0);
              this.backendSecret = body.readInt32BE(4);
            } else if (type === 0x45) {
              const f = parseErrorFields(body);
              const fields: ErrorFields = { severity: 'FATAL', code: f.get('C') ?? 'XX000', message: f.get('M') ?? 'error', detail: f.get('D'), hint: f.get('H') };
              if (this.replayPending < 0 && fields.code.startsWith('57P') && this.retryAttach()) {
                // The server is starting or shutting down (a switchover's edge): try again shortly.
                clearTimeout(connectTimer);
                this.dropBackend();
              } else if (this.replayPending < 0) {
                failAttach(fields, 'backend-unreachable');
              } else {
                failAttach(closure('session-restore-failed', { member: target.member, error: fields.message }), 'session-restore-failed');
              }
            } else if (type === 0x5a) {
              if (this.replayPending < 0) {
                if (promoting && this.notWritableYet(target)) return;
                this.replayPending = this.replay(socket);
              } else {
                this.replayPending -= 1;
              }
              if (this.replayPending === 0) this.attached(first);
            }
          });
        } catch (error) {
          failAttach({ severity: 'FATAL', code: '28000', message: `relevo router: ${(error as Error).message}` }, 'backend-unreachable');
        }
      });
    };
    if (!serverCa) wire(plain);
    else {
      // Until TLS is up only failures matter on the plain socket; its bytes belong to the handshake.
      plain.on('error', (error) => onError(plain, error));
      plain.on('close', () => {
        if (this.backend === plain) this.serverLost();
      });
    }
    if (pooled) {
      // A pooled server session is past its startup: only the session state to replay.
      this.backendPid = pooled.pid;
      this.backendSecret = pooled.secret;
      if (promoting && this.notWritableYet(target)) return;
      this.replayPending = this.replay(plain);
      if (this.replayPending === 0) this.attached(first);
    }
  }

  /**
   * The client left while its server session was idle: reset that session
   * (DISCARD ALL) and give it to the pool. False when there is no pool or the
   * server session cannot be reused.
   */
  private releaseServer(): boolean {
    const pool = this.ctx.pool;
    const b = this.backend;
    const key = this.slotKey;
    const target = this.target;
    if (!pool || !b || !key || !target || this.phase !== 'active' || !this.idle || b.destroyed) return false;
    this.backend = undefined;
    this.slotKey = undefined;
    this.ctx.attached(this, target.member, -1);
    b.removeAllListeners('data');
    b.removeAllListeners('close');
    b.removeAllListeners('error');
    const params = new Map(this.serverParams);
    const server: PooledServer = { socket: b, key, member: target.member, params, pid: this.backendPid, secret: this.backendSecret };
    const splitter = new MessageSplitter();
    let settled = false;
    let failed = false;
    const give = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      b.removeAllListeners('data');
      b.removeAllListeners('close');
      b.removeAllListeners('error');
      if (ok) {
        pool.release(server);
      } else {
        b.on('error', () => undefined);
        b.destroy();
        pool.closed(key);
      }
    };
    b.on('error', () => give(false));
    b.on('close', () => give(false));
    b.on('data', (chunk: Buffer) => {
      try {
        splitter.push(chunk, (type, body) => {
          if (type === 0x45) failed = true;
          else if (type === 0x53) {
            const [name, value] = readCStrings(body);
            params.set(name as string, value as string);
          } else if (type === 0x5a) give(!failed && body[0] === TxStatus.Idle);
        });
      } catch {
        give(false);
      }
    });
    b.write(query('DISCARD ALL'));
    return true;
  }

  /**
   * The lease holder was tried before it published its promotion: if the
   * server still reports in_hot_standby = on, leave it and try again in a
   * moment (true). Saves waiting for the agent to publish its new role.
   */
  private notWritableYet(target: Backend): boolean {
    if (this.serverParams.get('in_hot_standby') !== 'on') return false;
    this.dropBackendCleanly(this.backend);
    if (!this.retryAttach(20)) {
      const heldMs = this.ctx.now() - (this.retrySince ?? this.ctx.now());
      const r = refusal('hold-timeout', { heldMs, reason: `leader ${target.member} did not finish its promotion` });
      if (this.clientParams.size === 0) this.refuseWith(r.fields, r.code);
      else this.close(r.fields, r.code);
    }
    return true;
  }

  /**
   * Parks the session to attach again in a moment, within holdMs of the first
   * try; false once that is used up.
   */
  private retryAttach(delayMs = 100): boolean {
    const now = this.ctx.now();
    this.retrySince ??= now;
    if (now - this.retrySince > this.ctx.timeouts.holdMs) return false;
    this.phase = this.clientParams.size === 0 ? 'waiting' : 'parked';
    setTimeout(() => this.tryAttach(), delayMs).unref();
    return true;
  }

  private retrySince: number | undefined;

  /** Sends the saved session state to a fresh server; returns how many ReadyForQuery to wait for. */
  private replay(socket: Socket): number {
    const state = this.state;
    this.state = undefined;
    if (!state) return 0;
    this.baseline = state;
    // Known unless the client sent a state-changing statement after the state was read (queued: it runs after this).
    this.stateKnown = this.stateChanges === this.stateChangesAtProbe;
    let pending = 0;
    const statements = [
      // Identity last: other settings may need the privileges of the session's original role.
      ...[...state.settings]
        .sort(([a], [b]) => Number(IDENTITY.has(a)) - Number(IDENTITY.has(b)))
        .map(([name, value]) => `SELECT pg_catalog.set_config(${literal(name)}, ${literal(value)}, false)`),
      ...state.sqlPrepared,
    ];
    if (statements.length > 0) {
      socket.write(query(statements.join(';\n')));
      pending += 1;
    }
    const parses = [...this.prepared].filter(([name]) => state.protocolPrepared.has(name)).map(([, parse]) => parse);
    for (const name of [...this.prepared.keys()]) if (!state.protocolPrepared.has(name)) this.prepared.delete(name);
    if (parses.length > 0) {
      socket.write(Buffer.concat([...parses, SYNC]));
      pending += 1;
    }
    return pending;
  }

  /** The server is ready (and the state replayed): tell the client what changed and let its bytes through. */
  private attached(first: boolean): void {
    this.endScout(true);
    this.phase = 'active';
    this.retrySince = undefined;
    const out: Buffer[] = [];
    if (first) out.push(authentication(AuthCode.Ok));
    for (const [name, value] of this.serverParams) {
      if (this.clientParams.get(name) === value) continue;
      this.clientParams.set(name, value);
      out.push(parameterStatus(name, value));
    }
    if (first) out.push(backendKeyData(this.key.pid, this.key.secret), readyForQuery(TxStatus.Idle));
    else this.moves += 1;
    if (out.length > 0) this.client.write(Buffer.concat(out));
    this.resumeRelaying();
  }

  private toServer(bytes: Buffer): void {
    if (this.phase === 'active' && this.backend) {
      writeDirect(this.backend, bytes);
      return;
    }
    this.queued.push(Buffer.from(bytes));
    this.queuedBytes += bytes.length;
    if (this.queuedBytes > MAX_QUEUED) {
      this.close({ severity: 'FATAL', code: '53200', message: 'relevo router: too much data sent while the session was moving' }, 'protocol-error');
    }
  }

  // ---- relaying ----------------------------------------------------------

  private onServerData(chunk: Buffer): void {
    if (this.phase === 'probing') {
      this.onProbeData(chunk);
      return;
    }
    this.cut = -1;
    this.lost = undefined;
    let whole: Buffer;
    try {
      whole = this.fromBackend.scan(chunk, this.eachServerMessage);
    } catch (error) {
      this.close({ severity: 'FATAL', code: '08P01', message: `relevo router: ${(error as ProtocolError).message}` }, 'protocol-error');
      return;
    }
    const cut = this.cut;
    const lost = this.lost;
    if (cut >= 0) whole = whole.subarray(0, cut);
    if (whole.length > 0) writeDirect(this.client, whole);
    if (lost) {
      this.serverLost();
      return;
    }
    if (this.moveRequested) this.checkMove();
    else this.checkRefresh();
  }

  /** Where the current server chunk is cut (a FATAL from a server going away), and what the client is told instead. */
  private cut = -1;
  private lost: ErrorFields | undefined;

  /** One server message (MessageSplitter.scan): only ReadyForQuery, ParameterStatus and ErrorResponse are read. */
  private readonly eachServerMessage = (type: number, data: Buffer, at: number, end: number): void => {
    if (this.cut >= 0) return;
    if (type === 0x5a) {
      this.outstanding = Math.max(0, this.outstanding - 1);
      this.txStatus = data[at + 5] as number;
    } else if (type === 0x53) {
      const [name, value] = readCStrings(data.subarray(at + 5, end));
      this.serverParams.set(name as string, value as string);
      this.clientParams.set(name as string, value as string);
    } else if (type === 0x45) {
      const f = parseErrorFields(data.subarray(at + 5, end));
      // The server is going away (shutdown for the switchover, crash): do not pass its FATAL on.
      if (f.get('V') === 'FATAL' || f.get('V') === 'PANIC') {
        this.cut = at;
        this.lost = { severity: 'ERROR', code: f.get('C') ?? '57P01', message: f.get('M') ?? '' };
      }
    }
  };

  /**
   * The server went away under the session. Idle: nothing to tell, attach
   * again. A request in flight or an open transaction: that work is lost, so
   * the client gets a retryable error for it, and the session goes on.
   */
  private serverLost(): void {
    if (this.phase === 'closed' || this.phase === 'parked' || this.phase === 'waiting') return;
    const member = this.target?.member ?? '?';
    if (this.phase === 'attaching') {
      this.dropBackend();
      if (this.clientParams.size === 0) this.phase = 'waiting';
      else this.phase = 'parked';
      this.tryAttachSoon();
      return;
    }
    if (this.fromBackend.pending > 0) {
      // Cut in the middle of a message: the client's stream cannot be repaired.
      this.close(closure('primary-changed', { member }), 'primary-changed');
      return;
    }
    if (!this.stateKnown) {
      this.close(closure('session-cannot-move', { member, what: 'it changed settings or prepared statements (SET, PREPARE, DISCARD) that could not be read before the server was lost' }), 'session-cannot-move');
      return;
    }
    if (this.unmovable.length > 0) {
      this.close(closure('session-cannot-move', { member, what: `it held ${this.unmovable.join(', ')} on the server that was lost` }), 'session-cannot-move');
      return;
    }
    const fields = closure('session-transaction-lost', { member });
    const inFlight = this.outstanding;
    const inTransaction = this.txStatus !== TxStatus.Idle;
    this.dropBackend();
    this.phase = 'parked';
    this.state = this.state ?? { ...this.baseline, protocolPrepared: new Set(this.prepared.keys()) };
    if (inFlight > 0) {
      const out: Buffer[] = [];
      for (let i = 0; i < inFlight; i++) out.push(errorResponse({ ...fields, severity: 'ERROR' }), readyForQuery(TxStatus.Idle));
      this.client.write(Buffer.concat(out));
      // Whatever the client sent after the lost requests belonged to the lost transaction too.
      this.queued = [];
      this.queuedBytes = 0;
      this.queuedRequests = 0;
    } else if (inTransaction) {
      this.failNext = { ...fields, severity: 'ERROR' };
    }
    this.outstanding = 0;
    this.txStatus = TxStatus.Idle;
    this.tryAttachSoon();
  }

  private tryAttachSoon(): void {
    // Let the router's view catch up with the event that cut the server first.
    setImmediate(() => this.tryAttach());
  }

  private scouting: string | undefined;

  private endScout(through = false): void {
    if (this.scouting === undefined) return;
    this.ctx.scout(this.scouting, false, through);
    this.scouting = undefined;
  }

  private dropBackend(): void {
    this.endScout();
    const b = this.backend;
    if (this.slotKey !== undefined) {
      this.ctx.pool?.closed(this.slotKey);
      this.slotKey = undefined;
    }
    if (!b) return;
    this.backend = undefined;
    if (this.target) this.ctx.attached(this, this.target.member, -1);
    b.removeAllListeners('data');
    b.on('error', () => undefined);
    b.destroy();
  }

  // ---- moving ------------------------------------------------------------

  /**
   * A planned switchover began: move this session as soon as it is idle. If
   * it is still in a transaction after `timeoutMs`, it is closed with
   * `timeoutFields` (its transaction cannot move).
   */
  beginMove(timeoutMs: number, timeoutFields: ErrorFields): void {
    if (this.phase === 'closed' || this.moveRequested) return;
    this.moveRequested = { fields: timeoutFields, reason: 'session-open-transaction' };
    this.moveTimer = setTimeout(() => {
      if (this.phase === 'active' || this.phase === 'attaching') this.close(timeoutFields, 'session-open-transaction');
    }, timeoutMs);
    this.moveTimer.unref();
    this.checkMove();
  }

  /** The switchover was abandoned before this session moved. */
  cancelMove(): void {
    this.moveRequested = undefined;
    clearTimeout(this.moveTimer);
    this.moveTimer = undefined;
  }

  /** The server this session is on lost the primary role (failover): leave it now, keeping the session. */
  leaveServer(): void {
    if (this.phase === 'active' || this.phase === 'probing' || this.phase === 'attaching') this.serverLost();
  }

  private checkMove(): void {
    if (!this.moveRequested || this.phase !== 'active' || !this.idle) return;
    this.startProbe('move');
  }

  /** After SET/PREPARE/...: read the state back while idle, so an unplanned loss can still replay it. */
  private checkRefresh(): void {
    if (this.stateKnown || this.phase !== 'active' || !this.idle) return;
    this.startProbe('refresh');
  }

  /** Statements that may change session state, seen so far (a probe's answer predates those sent during it). */
  private stateChanges = 0;
  private stateChangesAtProbe = 0;

  private stateChanged(): void {
    this.stateKnown = false;
    this.stateChanges += 1;
  }

  private startProbe(purpose: 'move' | 'refresh'): void {
    if (!this.backend) return;
    this.stateChangesAtProbe = this.stateChanges;
    // Idle between transactions: ask the server what the session holds. Client bytes wait meanwhile.
    this.phase = 'probing';
    this.probePurpose = purpose;
    this.probeRows = [];
    this.probeError = undefined;
    this.backend.write(query(PROBE_SQL));
  }

  private probePurpose: 'move' | 'refresh' = 'move';
  private probeRows: string[][] = [];
  private probeError: string | undefined;

  private onProbeData(chunk: Buffer): void {
    let done = false;
    try {
      this.fromBackend.push(chunk, (type, body) => {
        if (type === 0x44) this.probeRows.push(dataRow(body));
        else if (type === 0x45) this.probeError = parseErrorFields(body).get('M') ?? 'error';
        else if (type === 0x5a) done = true;
      });
    } catch {
      this.serverLost();
      return;
    }
    if (!done) return;
    const member = this.target?.member ?? '?';
    const row = this.probeRows[0];
    if (this.probeError !== undefined || !row || row.length < 7) {
      this.close(closure('session-cannot-move', { member, what: `its state could not be read (${this.probeError ?? 'no row'})` }), 'session-cannot-move');
      return;
    }
    const [temp, advisory, listen, cursors] = row.slice(0, 4).map(Number) as [number, number, number, number];
    const blockers = [
      temp > 0 ? 'temporary tables' : '',
      advisory > 0 ? 'advisory locks' : '',
      listen > 0 ? 'LISTEN registrations' : '',
      cursors > 0 ? 'WITH HOLD cursors' : '',
    ].filter(Boolean);
    const state: SessionState = {
      settings: JSON.parse(row[4] as string) as Array<[string, string]>,
      sqlPrepared: JSON.parse(row[5] as string) as string[],
      protocolPrepared: new Set(JSON.parse(row[6] as string) as string[]),
    };
    if (this.probePurpose === 'refresh') {
      this.baseline = state;
      // A state-changing statement the client sent while the probe ran waits in the queue: it runs
      // after this answer, so the state stays unknown (the next idle point probes again).
      this.stateKnown = this.stateChanges === this.stateChangesAtProbe;
      this.unmovable = blockers;
      this.resumeRelaying();
      return;
    }
    if (blockers.length > 0) {
      this.close(closure('session-cannot-move', { member, what: `it holds ${blockers.join(', ')}` }), 'session-cannot-move');
      return;
    }
    this.state = state;
    this.cancelMove();
    const backend = this.backend;
    this.dropBackendCleanly(backend);
    this.phase = 'parked';
    this.tryAttach();
  }

  /** Back to relaying (after attaching or a refresh probe): what the client sent meanwhile goes out now. */
  private resumeRelaying(): void {
    this.phase = 'active';
    const queued = this.queued;
    this.queued = [];
    this.queuedBytes = 0;
    this.outstanding += this.queuedRequests;
    this.queuedRequests = 0;
    if (queued.length > 0) this.backend?.write(Buffer.concat(queued));
    if (this.moveRequested) this.checkMove();
  }

  private dropBackendCleanly(backend: Socket | undefined): void {
    if (backend && !backend.destroyed) backend.write(TERMINATE);
    this.dropBackend();
  }

  // ---- cancel and closing -----------------------------------------------

  /** Forwards a CancelRequest to the server the session is on now. */
  cancel(): void {
    const t = this.target;
    if (!t || !this.backend || this.backendPid === 0) return;
    const packet = Buffer.alloc(16);
    packet.writeInt32BE(16, 0);
    packet.writeInt32BE(80877102, 4);
    packet.writeInt32BE(this.backendPid, 8);
    packet.writeInt32BE(this.backendSecret, 12);
    const s = connect({ host: t.host, port: t.port }, () => s.end(packet));
    s.on('error', () => undefined);
    s.setTimeout(this.ctx.timeouts.connectMs, () => s.destroy());
  }

  private refuse(r: Refusal): void {
    this.ctx.refused(r.code);
    this.refuseWith(r.fields);
  }

  private refuseWith(fields: ErrorFields, reason = 'refused'): void {
    if (this.phase === 'closed') return;
    this.closedBy = reason;
    this.client.on('error', () => undefined);
    this.client.end(errorResponse(fields));
    this.finish(reason);
  }

  /** Closes the session with a FATAL error (the client stream is always at a message boundary here). */
  close(fields: ErrorFields, reason: string): void {
    if (this.phase === 'closed') return;
    this.closedBy = reason;
    this.client.on('error', () => undefined);
    if (!this.client.destroyed) this.client.end(errorResponse(fields));
    this.finish(reason);
  }

  private finish(reason: string): void {
    if (this.phase === 'closed') return;
    const pooled = reason.startsWith('client-') && this.releaseServer();
    this.phase = 'closed';
    this.closedBy ??= reason;
    clearTimeout(this.timer);
    clearTimeout(this.moveTimer);
    this.cancelPoolWait?.();
    if (!pooled) this.dropBackendCleanly(this.backend);
    const client = this.client;
    setTimeout(() => client.destroy(), 1_000).unref();
    if (reason.startsWith('client-')) client.destroy();
    this.clientKey = undefined;
    this.ctx.unregister(this);
  }
}

/** Columns of a DataRow as text (NULL as ''). */
function dataRow(body: Buffer): string[] {
  const n = body.readInt16BE(0);
  const out: string[] = [];
  let at = 2;
  for (let i = 0; i < n; i++) {
    const len = body.readInt32BE(at);
    at += 4;
    if (len < 0) {
      out.push('');
      continue;
    }
    out.push(body.toString('utf8', at, at + len));
    at += len;
  }
  return out;
}

let decoy: ScramVerifier | undefined;
/** A verifier nobody knows the password of, for unknown roles. */
function decoyVerifier(): ScramVerifier {
  decoy ??= parseVerifier(`SCRAM-SHA-256$4096:${randomBytes(16).toString('base64')}$${randomBytes(32).toString('base64')}:${randomBytes(32).toString('base64')}`);
  return decoy as ScramVerifier;
}
