/**
 * relevo's own base backup client, without a server: the tar reader on
 * archives written by GNU tar (ustar) fed in every chunking, the CopyData
 * sub-protocol of BASE_BACKUP, extraction rules and the command text (its
 * SCRAM client is tested in router-scram.test.ts).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ArchiveWriter, baseBackupCommand, safeMemberPath } from '../../src/postgres/basebackup.js';
import { BackupCopyStream, type BackupStreamSink } from '../../src/postgres/basebackup-stream.js';
import { chooseCloneMethod } from '../../src/postgres/clone.js';
import { parseTarHeader, TarReader, tarNumber, type TarEntry } from '../../src/postgres/tar-reader.js';

interface Seen {
  entries: (TarEntry & { content: Buffer })[];
}

function collect(): { seen: Seen; reader: TarReader } {
  const seen: Seen = { entries: [] };
  let chunks: Buffer[] = [];
  const reader = new TarReader({
    entry: (e) => {
      chunks = [];
      seen.entries.push({ ...e, content: Buffer.alloc(0) });
    },
    data: (c) => chunks.push(Buffer.from(c)),
    end: () => {
      const last = seen.entries[seen.entries.length - 1];
      if (last) last.content = Buffer.concat(chunks);
    },
  });
  return { seen, reader };
}

/** A ustar archive made by GNU tar, as PostgreSQL sends it: without the two trailing zero blocks. */
function sampleArchive(): { tar: Buffer; files: Map<string, Buffer> } {
  const dir = mkdtempSync(join(tmpdir(), 'relevo-tar-'));
  try {
    const files = new Map<string, Buffer>();
    const add = (name: string, size: number) => {
      const content = Buffer.alloc(size);
      for (let i = 0; i < size; i++) content[i] = (i * 7 + name.length) & 0xff;
      files.set(name, content);
      writeFileSync(join(dir, 'src', name), content);
    };
    mkdirSync(join(dir, 'src', 'base', '1'), { recursive: true });
    mkdirSync(join(dir, 'src', 'pg_tblspc'));
    add('PG_VERSION', 3);
    add('empty', 0);
    add('base/1/block', 512);
    add('base/1/odd', 513);
    add('base/1/big', 100_003);
    symlinkSync('/somewhere/else', join(dir, 'src', 'pg_tblspc', '16384'));
    execFileSync('tar', ['--format=ustar', '-cf', join(dir, 'a.tar'), '-C', join(dir, 'src'), 'PG_VERSION', 'empty', 'base', 'pg_tblspc']);
    let tar = readFileSync(join(dir, 'a.tar'));
    // Strip the end-of-archive zero blocks (and GNU tar's record padding), as the protocol does.
    let end = tar.length;
    while (end >= 512 && tar.subarray(end - 512, end).every((b) => b === 0)) end -= 512;
    tar = tar.subarray(0, end);
    return { tar, files };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('tar reader', () => {
  const { tar, files } = sampleArchive();

  for (const chunkSize of [1, 7, 511, 512, 513, 4096, tar.length]) {
    it(`reads every entry and byte of a GNU ustar archive fed in chunks of ${chunkSize}`, () => {
      const { seen, reader } = collect();
      for (let at = 0; at < tar.length; at += chunkSize) reader.push(tar.subarray(at, at + chunkSize));
      reader.finish();
      const byName = new Map(seen.entries.map((e) => [e.name, e]));
      for (const [name, content] of files) {
        const e = byName.get(name);
        assert.ok(e, `entry ${name}`);
        assert.equal(e.type, 'file');
        assert.equal(e.size, content.length);
        assert.ok(e.content.equals(content), `content of ${name}`);
      }
      assert.equal(byName.get('base/1')?.type, 'directory', 'directory names lose their trailing slash');
      assert.equal(byName.get('pg_tblspc/16384')?.type, 'symlink');
      assert.equal(byName.get('pg_tblspc/16384')?.linkName, '/somewhere/else');
    });
  }

  it('accepts the standard end-of-archive zero blocks', () => {
    const { seen, reader } = collect();
    reader.push(Buffer.concat([tar, Buffer.alloc(1024)]));
    reader.finish();
    assert.equal(seen.entries.filter((e) => e.type === 'file').length, files.size);
  });

  it('refuses a truncated archive, a damaged header and data after the end', () => {
    const { reader } = collect();
    reader.push(tar.subarray(0, tar.length - 100));
    assert.throws(() => reader.finish(), { code: 'BASE_BACKUP_FAILED', message: /ends inside an entry/ });

    const damaged = Buffer.from(tar);
    damaged[5] = (damaged[5] as number) ^ 0xff;
    assert.throws(() => collect().reader.push(damaged), { code: 'BASE_BACKUP_FAILED', message: /checksum/ });

    const after = collect().reader;
    assert.throws(() => after.push(Buffer.concat([tar, Buffer.alloc(512), Buffer.from('x')])), { code: 'BASE_BACKUP_FAILED', message: /after the end/ });
  });

  it('reads octal and base-256 numbers (sizes over 8 GB)', () => {
    assert.equal(tarNumber(Buffer.from('00000001750\0')), 1000);
    assert.equal(tarNumber(Buffer.from('    17 \0')), 15);
    const big = Buffer.alloc(12);
    big[0] = 0x80;
    big.writeUIntBE(10 * 1024 ** 3, 6, 6);
    assert.equal(tarNumber(big), 10 * 1024 ** 3);
    assert.throws(() => tarNumber(Buffer.from('12x\0')), { code: 'BASE_BACKUP_FAILED', message: /invalid octal/ });
  });

  it('refuses entry types PostgreSQL never sends (hard links, devices)', () => {
    const header = Buffer.from(tar.subarray(0, 512));
    header[156] = '1'.charCodeAt(0);
    header.fill(' ', 148, 156);
    let sum = 0;
    for (const b of header) sum += b;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    assert.throws(() => parseTarHeader(header), { code: 'BASE_BACKUP_FAILED', message: /unsupported type "1"/ });
  });
});

function copyData(kind: string, body: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([Buffer.from(kind), body]);
}

describe('BASE_BACKUP CopyData stream', () => {
  function recorder(): { calls: string[]; sink: BackupStreamSink } {
    const calls: string[] = [];
    return {
      calls,
      sink: {
        archive: (name, location) => calls.push(`archive ${name} ${JSON.stringify(location)}`),
        archiveData: (c) => calls.push(`data ${c.toString()}`),
        archiveEnd: () => calls.push('end'),
        manifestData: (c) => calls.push(`manifest ${c.toString()}`),
        progress: (n) => calls.push(`progress ${n}`),
      },
    };
  }

  it("routes 'n', 'd', 'p' and 'm' messages: archives end at the next archive, the manifest or CopyDone", () => {
    const { calls, sink } = recorder();
    const s = new BackupCopyStream(sink);
    const progress = Buffer.alloc(8);
    progress.writeBigInt64BE(5_000_000_000n);
    s.copyData(copyData('n', Buffer.from('16384.tar\0/srv/ts\0')));
    s.copyData(copyData('d', Buffer.from('ts-bytes')));
    s.copyData(copyData('p', progress));
    s.copyData(copyData('n', Buffer.from('base.tar\0\0')));
    s.copyData(copyData('d', Buffer.from('base-bytes')));
    s.copyData(copyData('m'));
    s.copyData(copyData('d', Buffer.from('{"PostgreSQL-Backup-Manifest-Version": 1}')));
    s.done();
    assert.deepEqual(calls, [
      'archive 16384.tar "/srv/ts"',
      'data ts-bytes',
      'progress 5000000000',
      'end',
      'archive base.tar ""',
      'data base-bytes',
      'end',
      'manifest {"PostgreSQL-Backup-Manifest-Version": 1}',
    ]);
  });

  it('ends the last archive at CopyDone when no manifest follows', () => {
    const { calls, sink } = recorder();
    const s = new BackupCopyStream(sink);
    s.copyData(copyData('n', Buffer.from('base.tar\0\0')));
    s.done();
    assert.deepEqual(calls, ['archive base.tar ""', 'end']);
  });

  it('refuses data before an archive, unknown types, malformed messages and an empty stream', () => {
    assert.throws(() => new BackupCopyStream(recorder().sink).copyData(copyData('d', Buffer.from('x'))), { code: 'BASE_BACKUP_FAILED', message: /before the first archive/ });
    assert.throws(() => new BackupCopyStream(recorder().sink).copyData(copyData('z')), { code: 'BASE_BACKUP_FAILED', message: /unknown CopyData type "z"/ });
    assert.throws(() => new BackupCopyStream(recorder().sink).copyData(copyData('n', Buffer.from('base.tar'))), { code: 'BASE_BACKUP_FAILED', message: /malformed/ });
    assert.throws(() => new BackupCopyStream(recorder().sink).copyData(copyData('p', Buffer.alloc(4))), { code: 'BASE_BACKUP_FAILED', message: /progress message of 4 bytes/ });
    assert.throws(() => new BackupCopyStream(recorder().sink).done(), { code: 'BASE_BACKUP_FAILED', message: /no archive/ });
    const s = new BackupCopyStream(recorder().sink);
    s.copyData(copyData('n', Buffer.from('base.tar\0\0')));
    s.copyData(copyData('m'));
    assert.throws(() => s.copyData(copyData('n', Buffer.from('x.tar\0\0'))), { code: 'BASE_BACKUP_FAILED', message: /after the manifest/ });
  });
});

describe('base backup extraction and command', () => {
  it('extracts an archive: files with their bytes, directories, the tablespace link only to an announced location', () => {
    const { tar, files } = sampleArchive();
    const dir = mkdtempSync(join(tmpdir(), 'relevo-extract-'));
    try {
      const writer = new ArchiveWriter(dir, new Set(['/somewhere/else']));
      const reader = new TarReader(writer);
      reader.push(tar);
      reader.finish();
      writer.syncDirectories();
      for (const [name, content] of files) assert.ok(readFileSync(join(dir, name)).equals(content), name);
      assert.equal(readlinkSync(join(dir, 'pg_tblspc', '16384')), '/somewhere/else');
      assert.equal(statSync(join(dir, 'base', '1', 'big')).mode & 0o077 & ~0o040, 0, 'no access for others');
      assert.equal(writer.files, files.size);

      const other = mkdtempSync(join(tmpdir(), 'relevo-extract-'));
      try {
        const refusing = new TarReader(new ArchiveWriter(other, new Set()));
        assert.throws(() => refusing.push(tar), { code: 'BASE_BACKUP_FAILED', message: /unexpected symbolic link in the backup: pg_tblspc\/16384 -> \/somewhere\/else/ });
      } finally {
        rmSync(other, { recursive: true, force: true });
      }
      // A file that already exists is never overwritten (O_EXCL): the data directory must start empty.
      assert.throws(() => new TarReader(new ArchiveWriter(dir, new Set(['/somewhere/else']))).push(tar), /EEXIST/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses names that leave the directory', () => {
    assert.equal(safeMemberPath('./base/1/2'), 'base/1/2');
    for (const bad of ['/etc/passwd', '../x', 'base/../../x', '', '.']) assert.throws(() => safeMemberPath(bad), { code: 'BASE_BACKUP_FAILED', message: /unsafe name/ }, bad);
  });

  it('asks for a fast checkpoint, the WAL inside the backup and no manifest, with the label quoted', () => {
    assert.equal(
      baseBackupCommand({ label: "clone of r'1", fastCheckpoint: true, progress: false }),
      "BASE_BACKUP (LABEL 'clone of r''1', PROGRESS false, CHECKPOINT 'fast', WAL true, WAIT true, MANIFEST 'no', TARGET 'client')",
    );
  });

  it('chooses relevo\'s own base backup when binDir has no pg_basebackup, pg_basebackup when it matches the server', async () => {
    const user = { name: 'x', uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, home: '/' };
    const dir = mkdtempSync(join(tmpdir(), 'relevo-bin-'));
    try {
      const script = (major: number) => `#!/bin/sh\necho "prog (PostgreSQL) ${major}.2"\n`;
      writeFileSync(join(dir, 'postgres'), script(17), { mode: 0o755 });
      assert.equal(await chooseCloneMethod(dir, user, ''), 'relevo', 'no pg_basebackup');
      writeFileSync(join(dir, 'pg_basebackup'), script(15), { mode: 0o755 });
      assert.equal(await chooseCloneMethod(dir, user, ''), 'relevo', 'pg_basebackup 15 for a 17 server');
      writeFileSync(join(dir, 'pg_basebackup'), script(17), { mode: 0o755 });
      assert.equal(await chooseCloneMethod(dir, user, ''), 'pg_basebackup');
      assert.equal(await chooseCloneMethod(dir, user, 'relevo'), 'relevo', 'forced');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
