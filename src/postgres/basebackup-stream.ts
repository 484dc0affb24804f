/**
 * The payloads of the CopyData messages of a BASE_BACKUP with the new-style
 * protocol (PostgreSQL 15+, TARGET 'client', src/backend/backup/
 * basebackup_copy.c): every payload starts with a type byte:
 *   'n' a new archive begins: its name and its tablespace location (two
 *       NUL-terminated strings; the location is empty for the main data
 *       directory), ending the previous one;
 *   'd' bytes of the current archive (or of the manifest, after 'm');
 *   'p' progress: bytes done so far (int64);
 *   'm' the backup manifest begins (ends the last archive).
 * There is no explicit end of an archive: the next 'n', 'm' or the end of
 * the COPY ends it. Pure: payloads in, calls on the sink out.
 */
import { BaseBackupError } from './basebackup-error.js';

export interface BackupStreamSink {
  archive(name: string, location: string): void;
  archiveData(chunk: Buffer): void;
  /** The current archive is complete (before the next one, the manifest, or the end). */
  archiveEnd(): void;
  manifestData(chunk: Buffer): void;
  progress(bytesDone: number): void;
}


export class BackupCopyStream {
  private state: 'start' | 'archive' | 'manifest' = 'start';

  constructor(private readonly sink: BackupStreamSink) {}

  copyData(payload: Buffer): void {
    if (payload.length === 0) throw new BaseBackupError('empty CopyData message');
    const kind = String.fromCharCode(payload[0] as number);
    const body = payload.subarray(1);
    switch (kind) {
      case 'n': {
        const nameEnd = body.indexOf(0);
        const locationEnd = nameEnd < 0 ? -1 : body.indexOf(0, nameEnd + 1);
        if (nameEnd < 0 || locationEnd < 0) throw new BaseBackupError('malformed new-archive message');
        if (this.state === 'manifest') throw new BaseBackupError('a new archive after the manifest');
        if (this.state === 'archive') this.sink.archiveEnd();
        this.state = 'archive';
        this.sink.archive(body.toString('utf8', 0, nameEnd), body.toString('utf8', nameEnd + 1, locationEnd));
        return;
      }
      case 'd':
        if (this.state === 'archive') this.sink.archiveData(body);
        else if (this.state === 'manifest') this.sink.manifestData(body);
        else throw new BaseBackupError('data before the first archive');
        return;
      case 'p':
        if (body.length !== 8) throw new BaseBackupError(`progress message of ${body.length} bytes`);
        this.sink.progress(Number(body.readBigInt64BE(0)));
        return;
      case 'm':
        if (this.state === 'archive') this.sink.archiveEnd();
        this.state = 'manifest';
        return;
      default:
        throw new BaseBackupError(`unknown CopyData type ${JSON.stringify(kind)} (a server newer than this client?)`);
    }
  }

  /** CopyDone: ends the last archive; a stream without any archive is an error. */
  done(): void {
    if (this.state === 'start') throw new BaseBackupError('the backup stream held no archive');
    if (this.state === 'archive') this.sink.archiveEnd();
  }
}
