/**
 * A streaming reader for the ustar archives pg_basebackup writes (-Ft -D -):
 * no I/O of its own, entry bodies handed on chunk by chunk so a 1 GB relation
 * segment is never held in memory. PostgreSQL writes plain ustar (names up to
 * 99 bytes plus the 155-byte prefix field); pax/GNU long-name records are refused.
 */
export interface TarEntry {
  name: string;
  /** '0' file, '5' directory, '2' symlink. */
  type: 'file' | 'directory' | 'symlink';
  size: number;
  mode: number;
  mtime: number;
  linkTarget: string;
}

export interface TarBody {
  /**
   * Optional: a buffer to read the next chunk into (direct.ts). A chunk written
   * from its start is taken as it is, without a copy.
   */
  buffer?(): Buffer;
  write(chunk: Buffer): Promise<void> | void;
  end(): Promise<void> | void;
}

export interface TarSink {
  /** Called once per entry; returns how to consume its body (files only). */
  entry(entry: TarEntry): Promise<TarBody | undefined> | TarBody | undefined;
}

const BLOCK = 512;

function field(header: Buffer, offset: number, length: number): string {
  const raw = header.subarray(offset, offset + length);
  const nul = raw.indexOf(0);
  return raw.subarray(0, nul === -1 ? length : nul).toString('utf8');
}

function octal(header: Buffer, offset: number, length: number): number {
  const text = field(header, offset, length).trim();
  return text === '' ? 0 : parseInt(text, 8);
}

export function parseHeader(header: Buffer): TarEntry | undefined {
  if (header.every((byte) => byte === 0)) return undefined;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : header[i]!;
  if (sum !== octal(header, 148, 8)) throw new Error('tar: header checksum mismatch (not a pg_basebackup tar stream?)');
  const flag = String.fromCharCode(header[156]!);
  const prefix = field(header, 345, 155);
  const name = (prefix ? `${prefix}/` : '') + field(header, 0, 100);
  const type = flag === '0' || flag === '\0' ? 'file' : flag === '5' ? 'directory' : flag === '2' ? 'symlink' : undefined;
  if (!type) throw new Error(`tar: unsupported entry type "${flag}" for ${name}`);
  return { name: name.replace(/\/$/, ''), type, size: octal(header, 124, 12), mode: octal(header, 100, 8), mtime: octal(header, 136, 12), linkTarget: field(header, 157, 100) };
}

/** Reads a tar stream to its end-of-archive marker, feeding `sink` with backpressure. */
export async function readTar(source: AsyncIterable<Buffer>, sink: TarSink): Promise<void> {
  let pending: Buffer = Buffer.alloc(0);
  let body: TarBody | undefined;
  let remaining = 0;
  let padding = 0;
  let finished = false;
  for await (const chunk of source) {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    let offset = 0;
    while (!finished) {
      if (remaining > 0) {
        const take = Math.min(remaining, pending.length - offset);
        if (take === 0) break;
        if (body) await body.write(pending.subarray(offset, offset + take));
        offset += take;
        remaining -= take;
        if (remaining === 0 && body) await body.end();
        continue;
      }
      if (padding > 0) {
        const take = Math.min(padding, pending.length - offset);
        if (take === 0) break;
        offset += take;
        padding -= take;
        continue;
      }
      if (pending.length - offset < BLOCK) break;
      const entry = parseHeader(pending.subarray(offset, offset + BLOCK));
      offset += BLOCK;
      if (!entry) {
        finished = true;
        break;
      }
      body = await sink.entry(entry);
      remaining = entry.type === 'file' ? entry.size : 0;
      padding = entry.type === 'file' ? (BLOCK - (entry.size % BLOCK)) % BLOCK : 0;
      if (entry.type === 'file' && entry.size === 0 && body) await body.end();
    }
    pending = pending.subarray(offset);
    if (finished) {
      // Drain: pg_basebackup may still write zero blocks after the marker.
      continue;
    }
  }
  if (!finished && (remaining > 0 || pending.length > 0)) throw new Error('tar: stream ended in the middle of an entry');
}
