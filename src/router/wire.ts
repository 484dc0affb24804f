/**
 * Whole-message wire protocol helpers for session mode, where the router is
 * itself the client's server and the server's client: a splitter that yields
 * complete messages (keeping only an incomplete tail), readers for the few
 * message bodies the router interprets, and encoders for what it writes.
 *
 * The plain relay does not use this (it frames headers only, protocol.ts).
 */
import { ProtocolError } from './protocol.js';

/** Largest message the router accepts from either side in session mode (PostgreSQL's own limit is 1 GB). */
export const MAX_MESSAGE = 256 * 1024 * 1024;

/**
 * Splits a byte stream into complete typed messages. `push` returns the
 * range [0, end) of `data` that holds whole messages (so the caller can
 * forward them with one write) and calls `each` for every message in it.
 * The incomplete tail is kept and prepended to the next push.
 */
export class MessageSplitter {
  private tail: Buffer | undefined;

  push(chunk: Buffer, each: (type: number, body: Buffer, offset: number) => void): Buffer {
    return this.scan(chunk, (type, data, at, end) => each(type, data.subarray(at + 5, end), at));
  }

  /**
   * Like push, without a Buffer per message: `each` gets the message's type,
   * the buffer holding it, and where it starts (its type byte) and ends.
   * The hot paths of session mode use this and slice a body only when they
   * read it.
   */
  scan(chunk: Buffer, each: (type: number, data: Buffer, at: number, end: number) => void): Buffer {
    const data = this.tail ? Buffer.concat([this.tail, chunk]) : chunk;
    this.tail = undefined;
    const n = data.length;
    let at = 0;
    while (n - at >= 5) {
      const length = ((data[at + 1] as number) * 0x1000000) + (((data[at + 2] as number) << 16) | ((data[at + 3] as number) << 8) | (data[at + 4] as number));
      if (length < 4 || length > MAX_MESSAGE) throw new ProtocolError(`invalid length ${length} for message type 0x${(data[at] as number).toString(16)}`);
      const end = at + 1 + length;
      if (end > n) break;
      each(data[at] as number, data, at, end);
      at = end;
    }
    // Copy the tail: `chunk` may be a reusable read buffer.
    if (at < n) this.tail = Buffer.from(data.subarray(at));
    return at === n ? data : data.subarray(0, at);
  }

  /** Bytes of an incomplete message waiting for the rest. */
  get pending(): number {
    return this.tail?.length ?? 0;
  }
}

export function message(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeUInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

export function cstring(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
}

function int32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeInt32BE(n, 0);
  return b;
}

/** Reads NUL-terminated strings from a body. */
export function readCStrings(body: Buffer): string[] {
  const out: string[] = [];
  let at = 0;
  while (at < body.length) {
    const end = body.indexOf(0, at);
    if (end < 0) break;
    out.push(body.toString('utf8', at, end));
    at = end + 1;
  }
  return out;
}

/** StartupMessage parameters (user, database, options, application_name, ...). */
export function parseStartupParams(packet: Buffer): Map<string, string> {
  const strings = readCStrings(packet.subarray(8));
  const params = new Map<string, string>();
  for (let i = 0; i + 1 < strings.length; i += 2) {
    const key = strings[i] as string;
    if (key === '') break;
    params.set(key, strings[i + 1] as string);
  }
  return params;
}

export function startupMessage(params: Map<string, string>): Buffer {
  const parts: Buffer[] = [int32(196608)];
  for (const [k, v] of params) parts.push(cstring(k), cstring(v));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  return Buffer.concat([int32(body.length + 4), body]);
}

/** Authentication request ('R') with a code and optional payload. */
export function authentication(code: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  return message('R', Buffer.concat([int32(code), payload]));
}

export const AuthCode = { Ok: 0, SASL: 10, SASLContinue: 11, SASLFinal: 12 } as const;

export function parameterStatus(name: string, value: string): Buffer {
  return message('S', Buffer.concat([cstring(name), cstring(value)]));
}

export function backendKeyData(pid: number, secret: number): Buffer {
  return message('K', Buffer.concat([int32(pid), int32(secret)]));
}

export function readyForQuery(status: number): Buffer {
  return message('Z', Buffer.from([status]));
}

export function query(sql: string): Buffer {
  return message('Q', cstring(sql));
}

export const SYNC = message('S');

/** SASLInitialResponse ('p'): mechanism and client-first-message. */
export function saslInitialResponse(mechanism: string, data: string): Buffer {
  const d = Buffer.from(data, 'utf8');
  return message('p', Buffer.concat([cstring(mechanism), int32(d.length), d]));
}

export function saslResponse(data: string): Buffer {
  return message('p', Buffer.from(data, 'utf8'));
}

/** Reads SASLInitialResponse: mechanism and data. */
export function parseSaslInitial(body: Buffer): { mechanism: string; data: string } {
  const end = body.indexOf(0);
  if (end < 0 || body.length < end + 5) throw new ProtocolError('malformed SASLInitialResponse');
  const mechanism = body.toString('utf8', 0, end);
  const len = body.readInt32BE(end + 1);
  const data = len < 0 ? '' : body.toString('utf8', end + 5, end + 5 + len);
  return { mechanism, data };
}

/** Fields of an ErrorResponse/NoticeResponse body, by one-letter tag. */
export function parseErrorFields(body: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let at = 0;
  while (at < body.length && body[at] !== 0) {
    const tag = String.fromCharCode(body[at] as number);
    const end = body.indexOf(0, at + 1);
    if (end < 0) break;
    out.set(tag, body.toString('utf8', at + 1, end));
    at = end + 1;
  }
  return out;
}

/** Quotes a string as an SQL literal (standard_conforming_strings on, as in every supported server). */
export function literal(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}
