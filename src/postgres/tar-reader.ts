/**
 * A streaming reader for the tar archives PostgreSQL's BASE_BACKUP sends
 * (src/port/tar.c on the server): POSIX ustar headers of 512 bytes, each
 * file's data padded to a multiple of 512, no trailing zero blocks (the
 * protocol omits them; a zero block is accepted as the end all the same).
 * The server never writes long names (it refuses names over 99 bytes) but
 * may write a size over 8 GB in base-256 form, which is read here.
 *
 * Why our own: ~100 lines, no dependency, and the backup client needs a
 * push parser it can feed CopyData payloads of any size into.
 *
 * Pure: bytes in, entries out; no I/O.
 */
import { BaseBackupError } from './basebackup-error.js';

export type TarEntryType = 'file' | 'directory' | 'symlink';

export interface TarEntry {
  name: string;
  type: TarEntryType;
  mode: number;
  size: number;
  /** Target of a symbolic link ('' otherwise). */
  linkName: string;
  mtime: number;
}

export interface TarSink {
  /** A new entry; its data (size bytes) follows in `data` calls, then `end`. */
  entry(entry: TarEntry): void;
  data(chunk: Buffer): void;
  end(): void;
}


const BLOCK = 512;

/** A numeric header field: octal text (NUL/space terminated), or base-256 when the high bit of the first byte is set. */
export function tarNumber(field: Buffer): number {
  if (field.length > 0 && ((field[0] as number) & 0x80) !== 0) {
    let value = (field[0] as number) & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + (field[i] as number);
    return value;
  }
  const text = field.toString('latin1').replace(/[\0 ]+$/, '').replace(/^[\0 ]+/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new BaseBackupError(`invalid octal field ${JSON.stringify(text)}`);
  return parseInt(text, 8);
}

function cString(field: Buffer): string {
  const end = field.indexOf(0);
  return field.toString('utf8', 0, end < 0 ? field.length : end);
}

/** Parses one 512-byte header; undefined for an all-zero block (end of archive). */
export function parseTarHeader(block: Buffer): TarEntry | undefined {
  if (block.length !== BLOCK) throw new BaseBackupError(`header of ${block.length} bytes`);
  if (block.every((b) => b === 0)) return undefined;
  const stored = tarNumber(block.subarray(148, 156));
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : (block[i] as number);
  if (sum !== stored) throw new BaseBackupError(`header checksum ${stored} does not match ${sum}`);
  const prefix = block.subarray(257, 263).toString('latin1').startsWith('ustar') ? cString(block.subarray(345, 500)) : '';
  const base = cString(block.subarray(0, 100));
  const name = prefix ? `${prefix}/${base}` : base;
  const flag = String.fromCharCode(block[156] as number);
  let type: TarEntryType;
  if (flag === '0' || flag === '\0' || flag === '7') type = 'file';
  else if (flag === '5') type = 'directory';
  else if (flag === '2') type = 'symlink';
  else throw new BaseBackupError(`entry ${JSON.stringify(name)} has unsupported type ${JSON.stringify(flag)}`);
  const size = tarNumber(block.subarray(124, 136));
  return {
    name: type === 'directory' ? name.replace(/\/+$/, '') : name,
    type,
    mode: tarNumber(block.subarray(100, 108)) & 0o7777,
    size: type === 'file' ? size : 0,
    linkName: type === 'symlink' ? cString(block.subarray(157, 257)) : '',
    mtime: tarNumber(block.subarray(136, 148)),
  };
}

/** Push parser: feed any chunking of one archive; `finish` checks the archive did not stop inside an entry. */
export class TarReader {
  private header: Buffer = Buffer.alloc(0);
  /** Data bytes left in the current entry, then padding bytes left. */
  private dataLeft = 0;
  private padLeft = 0;
  private inEntry = false;
  private ended = false;

  constructor(private readonly sink: TarSink) {}

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.ended) {
        // After the end marker only zero padding may follow.
        if (chunk.subarray(at).some((b) => b !== 0)) throw new BaseBackupError('data after the end of the archive');
        return;
      }
      if (this.dataLeft > 0) {
        const n = Math.min(this.dataLeft, chunk.length - at);
        this.sink.data(chunk.subarray(at, at + n));
        this.dataLeft -= n;
        at += n;
        if (this.dataLeft === 0) this.closeEntry();
        continue;
      }
      if (this.padLeft > 0) {
        const n = Math.min(this.padLeft, chunk.length - at);
        this.padLeft -= n;
        at += n;
        continue;
      }
      const need = BLOCK - this.header.length;
      const n = Math.min(need, chunk.length - at);
      this.header = this.header.length === 0 && n === BLOCK ? chunk.subarray(at, at + n) : Buffer.concat([this.header, chunk.subarray(at, at + n)]);
      at += n;
      if (this.header.length < BLOCK) continue;
      const entry = parseTarHeader(this.header);
      this.header = Buffer.alloc(0);
      if (!entry) {
        this.ended = true;
        continue;
      }
      this.sink.entry(entry);
      this.inEntry = true;
      this.dataLeft = entry.size;
      this.padLeft = (BLOCK - (entry.size % BLOCK)) % BLOCK;
      if (this.dataLeft === 0) this.closeEntry();
    }
  }

  private closeEntry(): void {
    this.inEntry = false;
    this.sink.end();
  }

  /** The archive is complete: not inside an entry, its padding or a header. */
  finish(): void {
    if (this.inEntry || this.dataLeft > 0 || this.padLeft > 0 || this.header.length > 0) {
      throw new BaseBackupError('the archive ends inside an entry');
    }
  }
}
