/**
 * Just enough of the PostgreSQL wire protocol for a relay that never alters
 * bytes: an incremental framer that finds message boundaries (type byte +
 * int32 length) without I/O and without copying, plus the few messages the
 * router writes itself (ErrorResponse, Terminate).
 *
 * The framer reads only the 5 header bytes of each message and skips bodies
 * by arithmetic, so its cost is per message, not per byte. It looks inside a
 * body only for ReadyForQuery (1 status byte) and BackendKeyData (8 bytes).
 */

/** Request codes of the untyped packets a client may send first. */
export const RequestCode = {
  /** Protocol 3.0 StartupMessage (major 3, minor 0). Later minors share the major. */
  Startup30: 196608,
  Cancel: 80877102,
  SSL: 80877103,
  GSSENC: 80877104,
} as const;

/** Backend message types the router cares about. */
export const BackendMessage = {
  ReadyForQuery: 0x5a, // 'Z'
  BackendKeyData: 0x4b, // 'K'
  ErrorResponse: 0x45, // 'E'
} as const;

/** Frontend message types that each produce exactly one ReadyForQuery. */
export const FrontendMessage = {
  Query: 0x51, // 'Q'
  Sync: 0x53, // 'S'
  FunctionCall: 0x46, // 'F'
  Terminate: 0x58, // 'X'
} as const;

/** ReadyForQuery transaction status bytes. */
export const TxStatus = {
  Idle: 0x49, // 'I'
  InTransaction: 0x54, // 'T'
  Failed: 0x45, // 'E'
} as const;

/** Largest startup packet PostgreSQL accepts (MAX_STARTUP_PACKET_LENGTH). */
export const MAX_STARTUP_PACKET = 10_000;

/** The framer met bytes that cannot be a PostgreSQL message header. */
export class ProtocolError extends Error {
  readonly code = 'ROUTER_PROTOCOL_ERROR';
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/**
 * Incremental framer for one direction of a session.
 *
 * State is a handful of numbers: where we are in the current header, how many
 * body bytes remain to skip, and the few captured fields. Feed it every chunk
 * in order with `push`; it never keeps a reference to a chunk.
 */
export class Framer {
  /** Bytes of the current header read so far (0 = at a message boundary). */
  private headerPos = 0;
  /** Header length: 5 for typed messages, 4 for the one untyped startup packet. */
  private headerLen = 5;
  private type = 0;
  private length = 0;
  /** Body bytes of the current message still to skip. */
  private remaining = 0;
  /** Offset inside the body of the current message (for captured fields). */
  private bodyPos = 0;
  /** The next byte is a single-byte answer to SSLRequest/GSSENCRequest, not a message. */
  private expectAnswer = false;

  /** Messages completely framed so far. */
  messages = 0;
  /** ReadyForQuery messages seen. */
  readyCount = 0;
  /** Status byte of the last ReadyForQuery ('I', 'T', 'E'), 0 before the first. */
  readyStatus = 0;
  /** Query, Sync and FunctionCall messages seen: each gets one ReadyForQuery back. */
  syncCount = 0;
  /** Terminate seen: the client is leaving. */
  terminated = false;
  /** BackendKeyData (process id and secret key), for routing CancelRequests. */
  backendPid = 0;
  backendSecret = 0;
  /** Single-byte answer to SSLRequest/GSSENCRequest ('S', 'N', 'G'), 0 if none yet. */
  encryptionAnswer = 0;

  /** True between messages: a message written now would not split another one. */
  get atBoundary(): boolean {
    return this.headerPos === 0 && this.remaining === 0 && !this.expectAnswer;
  }

  /** The next packet has no type byte (a StartupMessage sent after an SSL 'N'). */
  expectUntypedPacket(): void {
    this.headerLen = 4;
  }

  /** The next byte is the server's one-byte answer to an SSLRequest or GSSENCRequest. */
  expectEncryptionAnswer(): void {
    this.expectAnswer = true;
  }

  /**
   * Frames `chunk` (or its part [start, end)). Throws ProtocolError when a
   * length is impossible; the relay then closes the session.
   */
  push(chunk: Uint8Array, start = 0, end = chunk.length): void {
    let i = start;
    while (i < end) {
      if (this.remaining > 0) {
        // Skip body bytes; capture only the fields we need.
        const take = Math.min(this.remaining, end - i);
        if (this.type === BackendMessage.ReadyForQuery || this.type === BackendMessage.BackendKeyData) {
          this.capture(chunk, i, take);
        }
        this.remaining -= take;
        i += take;
        if (this.remaining === 0) this.finish();
        continue;
      }
      if (this.expectAnswer) {
        this.expectAnswer = false;
        this.encryptionAnswer = chunk[i] as number;
        i += 1;
        continue;
      }
      // Fast path: a whole typed header inside this chunk.
      if (this.headerPos === 0 && this.headerLen === 5 && end - i >= 5) {
        this.type = chunk[i] as number;
        this.length =
          (((chunk[i + 1] as number) << 24) |
            ((chunk[i + 2] as number) << 16) |
            ((chunk[i + 3] as number) << 8) |
            (chunk[i + 4] as number)) >>>
          0;
        i += 5;
        this.startBody();
        continue;
      }
      // Slow path: a header split across chunks, one byte at a time.
      const byte = chunk[i] as number;
      i += 1;
      if (this.headerPos === 0) this.length = 0;
      if (this.headerLen === 5 && this.headerPos === 0) {
        this.type = byte;
      } else {
        this.length = ((this.length << 8) | byte) >>> 0;
      }
      this.headerPos += 1;
      if (this.headerPos === this.headerLen) {
        this.headerPos = 0;
        this.startBody();
      }
    }
  }

  private startBody(): void {
    const untyped = this.headerLen === 4;
    if (untyped) {
      this.type = 0;
      this.headerLen = 5;
      if (this.length < 8 || this.length > MAX_STARTUP_PACKET) {
        throw new ProtocolError(`invalid startup packet length ${this.length}`);
      }
    } else if (this.length < 4 || this.length > 0x7fffffff) {
      throw new ProtocolError(`invalid length ${this.length} for message type 0x${this.type.toString(16)}`);
    }
    this.remaining = this.length - 4;
    this.bodyPos = 0;
    if (this.remaining === 0) this.finish();
  }

  private capture(chunk: Uint8Array, at: number, take: number): void {
    for (let k = 0; k < take; k++) {
      const pos = this.bodyPos + k;
      const byte = chunk[at + k] as number;
      if (this.type === BackendMessage.ReadyForQuery) {
        if (pos === 0) this.readyStatus = byte;
      } else if (pos < 4) {
        this.backendPid = pos === 0 ? byte : ((this.backendPid << 8) | byte) >>> 0;
      } else if (pos < 8) {
        this.backendSecret = pos === 4 ? byte : ((this.backendSecret << 8) | byte) >>> 0;
      }
    }
    this.bodyPos += take;
  }

  private finish(): void {
    this.messages += 1;
    switch (this.type) {
      case BackendMessage.ReadyForQuery:
        this.readyCount += 1;
        break;
      case FrontendMessage.Query:
      case FrontendMessage.Sync:
      case FrontendMessage.FunctionCall:
        this.syncCount += 1;
        break;
      case FrontendMessage.Terminate:
        this.terminated = true;
        break;
    }
  }
}

/**
 * True when a session framed in both directions is idle between
 * transactions: every Query/Sync got its ReadyForQuery, the last one said
 * 'I', and neither direction is in the middle of a message. (The first
 * ReadyForQuery ends the startup and answers no client message.)
 */
export function sessionIdle(fromClient: Framer, fromBackend: Framer): boolean {
  return (
    fromBackend.readyCount > 0 &&
    fromBackend.readyStatus === TxStatus.Idle &&
    fromBackend.readyCount - 1 === fromClient.syncCount &&
    fromClient.atBoundary &&
    fromBackend.atBoundary
  );
}

export type StartupPacket =
  | { kind: 'startup'; length: number; protocol: number }
  | { kind: 'ssl'; length: number }
  | { kind: 'gssenc'; length: number }
  | { kind: 'cancel'; length: number; pid: number; secret: number };

/**
 * Reads the untyped packet a client sends first, from the bytes received so
 * far. Returns undefined while incomplete; throws ProtocolError when it can
 * never be valid (bad length, unknown request code).
 */
export function parseStartupPacket(buf: Buffer): StartupPacket | undefined {
  if (buf.length < 4) return undefined;
  const length = buf.readUInt32BE(0);
  if (length < 8 || length > MAX_STARTUP_PACKET) {
    throw new ProtocolError(`invalid startup packet length ${length}`);
  }
  if (buf.length < 8) return undefined;
  const code = buf.readUInt32BE(4);
  const major = code >>> 16;
  const known = code === RequestCode.Cancel || code === RequestCode.SSL || code === RequestCode.GSSENC || major === 3;
  if (!known) throw new ProtocolError(`unsupported frontend protocol or request code ${code}`);
  if ((code === RequestCode.SSL || code === RequestCode.GSSENC) && length !== 8) {
    throw new ProtocolError(`invalid ${code === RequestCode.SSL ? 'SSLRequest' : 'GSSENCRequest'} length ${length}`);
  }
  if (code === RequestCode.Cancel && length !== 16) throw new ProtocolError(`invalid CancelRequest length ${length}`);
  if (buf.length < length) return undefined;
  if (code === RequestCode.SSL) return { kind: 'ssl', length };
  if (code === RequestCode.GSSENC) return { kind: 'gssenc', length };
  if (code === RequestCode.Cancel) {
    return { kind: 'cancel', length, pid: buf.readUInt32BE(8), secret: buf.readUInt32BE(12) };
  }
  return { kind: 'startup', length, protocol: code };
}

/** Fields of an ErrorResponse the router sends itself. */
export interface ErrorFields {
  severity: 'FATAL' | 'ERROR';
  /** SQLSTATE, e.g. 57P03 cannot_connect_now. */
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

/** Encodes an ErrorResponse ('E') message. */
export function errorResponse(fields: ErrorFields): Buffer {
  const parts: Array<[string, string]> = [
    ['S', fields.severity],
    ['V', fields.severity],
    ['C', fields.code],
    ['M', fields.message],
  ];
  if (fields.detail) parts.push(['D', fields.detail]);
  if (fields.hint) parts.push(['H', fields.hint]);
  let size = 4 + 1; // length + final terminator
  const encoded = parts.map(([tag, text]) => {
    const bytes = Buffer.from(text, 'utf8');
    size += 1 + bytes.length + 1;
    return [tag, bytes] as const;
  });
  const out = Buffer.alloc(1 + size);
  out[0] = BackendMessage.ErrorResponse;
  out.writeUInt32BE(size, 1);
  let at = 5;
  for (const [tag, bytes] of encoded) {
    out[at++] = tag.charCodeAt(0);
    bytes.copy(out, at);
    at += bytes.length;
    out[at++] = 0;
  }
  out[at] = 0;
  return out;
}

/** A Terminate ('X') message: lets the backend end the session cleanly. */
export const TERMINATE = Buffer.from([FrontendMessage.Terminate, 0, 0, 0, 4]);

/** The one-byte "no encryption" answer to SSLRequest/GSSENCRequest. */
export const ENCRYPTION_REFUSED = Buffer.from('N');
