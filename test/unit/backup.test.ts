import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LIBEXEC } from '../../src/backup/archive.js';
import type { BackupFile, BackupRecord } from '../../src/backup/catalog.js';
import type { BackupContext } from '../../src/backup/context.js';
import { BACKUP_ERRORS, type BackupError } from '../../src/backup/errors.js';
import { planRestore, restoreFile } from '../../src/backup/restore.js';
import { sourceDirectory } from '../../src/backup/bootstrap.js';
import { parseHistory, parseSegmentName, segmentName, walChainGaps, walKey } from '../../src/backup/layout.js';
import { DirectoryRepository } from '../../src/backup/repository.js';
import { backupsToKeep } from '../../src/backup/retention.js';
import { readTar } from '../../src/backup/tar.js';
import { BackupSettingsSchema } from '../../src/cluster/backup-settings.js';

const dirs: string[] = [];
const scratch = () => {
  const dir = mkdtempSync(join(tmpdir(), 'relevo-unit-backup-'));
  dirs.push(dir);
  return dir;
};
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('tar reader', () => {
  it('reads files, directories and symlinks from GNU tar output, split at every chunk size', async () => {
    const dir = scratch();
    mkdirSync(join(dir, 'src', 'base', '1'), { recursive: true });
    writeFileSync(join(dir, 'src', 'base', '1', 'small'), 'hello');
    writeFileSync(join(dir, 'src', 'big'), Buffer.alloc(70_000, 7));
    writeFileSync(join(dir, 'src', 'empty'), '');
    execFileSync('ln', ['-s', '/elsewhere', join(dir, 'src', 'link')]);
    const tar = execFileSync('tar', ['--format=ustar', '-C', join(dir, 'src'), '-cf', '-', '.']);
    for (const chunkSize of [1, 7, 512, 513, 4096, tar.length]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < tar.length; i += chunkSize) chunks.push(tar.subarray(i, i + chunkSize));
      const seen = new Map<string, Buffer>();
      const kinds = new Map<string, string>();
      await readTar(
        (async function* () {
          yield* chunks;
        })(),
        {
          entry(e) {
            kinds.set(e.name.replace(/^\.\//, ''), e.type === 'symlink' ? `symlink:${e.linkTarget}` : e.type);
            if (e.type !== 'file') return undefined;
            const parts: Buffer[] = [];
            return { write: (c) => void parts.push(Buffer.from(c)), end: () => void seen.set(e.name.replace(/^\.\//, ''), Buffer.concat(parts)) };
          },
        },
      );
      assert.equal(seen.get('base/1/small')?.toString(), 'hello', `chunk ${chunkSize}`);
      assert.equal(seen.get('big')?.length, 70_000);
      assert.equal(seen.get('empty')?.length, 0);
      assert.equal(kinds.get('link'), 'symlink:/elsewhere');
      assert.equal(kinds.get('base/1'), 'directory');
    }
  });

  it('refuses a damaged header', async () => {
    const block = Buffer.alloc(512, 0x41);
    await assert.rejects(readTar((async function* () { yield block; })(), { entry: () => undefined }), /checksum/);
  });
});

describe('WAL names and the chain across timelines', () => {
  it('round-trips segment names and places them in the layout', () => {
    const name = '000000020000000A000000FF';
    assert.deepEqual(parseSegmentName(name), { timeline: 2, number: 0xa00n * 0n + 10n * 256n + 255n });
    assert.equal(segmentName(parseSegmentName(name)!), name);
    assert.equal(walKey(name), 'wal/000000020000000A/000000020000000A000000FF');
    assert.equal(walKey('00000002.history'), 'wal/other/00000002.history');
  });

  it('needs the parent timeline up to the switch segment and the child from it on', () => {
    const history = parseHistory(2, '1\t0/3000100\tno recovery target specified\n');
    const names = ['000000010000000000000001', '000000010000000000000002', '000000020000000000000003', '000000020000000000000004'];
    assert.deepEqual(walChainGaps(new Set(names), history, 1, '0/1000028').gaps, []);
    const missing = walChainGaps(new Set(names.filter((n) => n !== '000000010000000000000002')), history, 1, '0/1000028');
    assert.deepEqual(missing.gaps, [{ timeline: 1, segment: '000000010000000000000002' }]);
    assert.equal(missing.last, '000000020000000000000004');
  });
});

const backup = (id: string, type: 'full' | 'incremental', parent: string | null, finishedAt: string): BackupRecord => ({
  id, type, parent, cluster: 'c', systemIdentifier: '1', source: 'n2', fromPrimary: false, startedAt: finishedAt, finishedAt, durationMs: 1,
  timeline: 1, startLsn: '0/1000000', endLsn: '0/1000100', compression: { type: 'gzip', level: 1 }, sizeBytes: 1, storedBytes: 1,
  files: [], directories: [], symlinks: [], rowCheck: null,
});

describe('retention', () => {
  const backups = [
    backup('F1', 'full', null, '2026-11-01T00:00:00Z'),
    backup('I1', 'incremental', 'F1', '2026-11-02T00:00:00Z'),
    backup('F2', 'full', null, '2026-11-10T00:00:00Z'),
    backup('I2', 'incremental', 'F2', '2026-11-11T00:00:00Z'),
    backup('F3', 'full', null, '2026-11-20T00:00:00Z'),
  ];
  const now = new Date('2026-11-21T00:00:00Z');

  it('keeps everything when no rule is set', () => {
    assert.equal(backupsToKeep(backups, {}, now, undefined).size, 5);
  });

  it('by count keeps the newest fulls with their incrementals, and the newest verified backup with its ancestors', () => {
    assert.deepEqual([...backupsToKeep(backups, { fullCount: 2 }, now, undefined).keys()].sort(), ['F2', 'F3', 'I2']);
    const keep = backupsToKeep(backups, { fullCount: 1 }, now, 'I1');
    assert.deepEqual([...keep.keys()].sort(), ['F1', 'F3', 'I1']);
    assert.match(keep.get('F1')!, /parent of kept backup I1/);
  });

  it('by age keeps the window plus the newest backup before it', () => {
    assert.deepEqual([...backupsToKeep(backups, { maxAgeDays: 5 }, now, undefined).keys()].sort(), ['F2', 'F3', 'I2']);
  });
});

describe('directory repository', () => {
  it('stores once, accepts the same content again, keeps different content aside', async () => {
    const repo = new DirectoryRepository(scratch());
    assert.equal((await repo.putIfAbsent('a/b', Buffer.from('one'))).status, 'created');
    assert.equal((await repo.putIfAbsent('a/b', Buffer.from('one'))).status, 'same');
    const conflict = await repo.putIfAbsent('a/b', Buffer.from('two'));
    assert.equal(conflict.status, 'conflict');
    assert.equal((await repo.readBuffer('a/b')).toString(), 'one');
    assert.equal((await repo.recordedSha256('a/b'))?.length, 64);
    assert.deepEqual((await repo.list('')).map((o) => o.key), ['a/b', conflict.status === 'conflict' ? conflict.keptAs : '']);
    await assert.rejects(repo.putIfAbsent('../x', Buffer.from('x')), /invalid repository key/);
  });

  it('relevo-wal-push and relevo-wal-get follow the same protocol', () => {
    const location = scratch();
    writeFileSync(join(location, 'relevo-repository.json'), '{"format":1}');
    const data = scratch();
    const seg = '000000010000000000000001';
    writeFileSync(join(data, seg), Buffer.alloc(4096, 1));
    const push = (file: string) => execFileSync(join(LIBEXEC, 'relevo-wal-push'), [location, 'c-1', file, seg], { cwd: data, stdio: ['ignore', 'pipe', 'pipe'] });
    push(join(data, seg));
    push(join(data, seg));
    writeFileSync(join(data, 'other'), Buffer.alloc(4096, 2));
    push(join(data, 'other'));
    const stored = join(location, 'c-1', 'wal', '0000000100000000', seg);
    assert.deepEqual(readFileSync(stored), Buffer.alloc(4096, 1), 'the first copy stays');
    assert.equal(readdirSync(join(location, 'c-1', 'conflicts')).length, 1, 'the different copy is kept aside');
    execFileSync(join(LIBEXEC, 'relevo-wal-get'), [location, 'c-1', seg, join(data, 'restored')]);
    assert.deepEqual(readFileSync(join(data, 'restored')), Buffer.alloc(4096, 1));
    writeFileSync(stored, Buffer.alloc(4096, 3));
    assert.throws(() => execFileSync(join(LIBEXEC, 'relevo-wal-get'), [location, 'c-1', seg, join(data, 'bad')], { stdio: 'pipe' }), (e: { status: number }) => e.status === 200);
    assert.throws(() => execFileSync(join(LIBEXEC, 'relevo-wal-get'), [location, 'c-1', '000000010000000000000009', join(data, 'none')], { stdio: 'pipe' }), (e: { status: number }) => e.status === 1);
  });
});

describe('backup settings and errors', () => {
  it('defaults are valid and every error has a hint', () => {
    const settings = BackupSettingsSchema.parse({});
    assert.equal(settings.atBacklogLimit, 'keep');
    assert.ok(settings.backlogWarnBytes < settings.backlogLimitBytes);
    for (const [code, entry] of Object.entries(BACKUP_ERRORS)) assert.ok(entry.hint.length > 10, code);
  });
});

describe('docs/backup.md', () => {
  it('lists every error code with its exit code and hint, and nothing else', () => {
    const text = readFileSync(new URL('../../../docs/backup.md', import.meta.url), 'utf8');
    const block = text.slice(text.indexOf('<!-- errors:start -->'), text.indexOf('<!-- errors:end -->'));
    const rows = [...block.matchAll(/^\| `([A-Z_]+)` \| (\d) \| (.+) \|$/gm)].map((m) => [m[1], Number(m[2]), m[3]]);
    const expected = Object.entries(BACKUP_ERRORS).map(([code, e]) => [code, e.exit, e.hint]);
    assert.deepEqual(rows, expected);
  });
});

describe('restore planning', () => {
  const make = async () => {
    const dir = scratch();
    const repository = new DirectoryRepository(dir);
    const record = { ...backup('20261120-000000F', 'full', null, '2026-11-20T00:00:10Z'), startLsn: '0/2000028', endLsn: '0/2000100' };
    await repository.putIfAbsent(`backups/${record.id}/backup.json`, Buffer.from(JSON.stringify(record)));
    for (const seg of ['000000010000000000000002', '000000010000000000000003']) await repository.putIfAbsent(walKey(seg), Buffer.alloc(16));
    await repository.putIfAbsent('restore-points/before.json', Buffer.from(JSON.stringify({ name: 'before', lsn: '0/3000100', timeline: 1, at: '2026-11-20T00:01:00Z' })));
    const ctx = { cluster: 'c', repository, settings: BackupSettingsSchema.parse({}) } as unknown as BackupContext;
    return { ctx, record };
  };

  it('picks the backup and writes the target in PostgreSQL\'s formats', async () => {
    const { ctx, record } = await make();
    const plan = await planRestore(ctx, { kind: 'time', time: new Date('2026-11-20T00:00:30Z') });
    assert.equal(plan.backup.id, record.id);
    assert.equal(plan.recovery.recovery_target_time, '2026-11-20 00:00:30.000+00');
    assert.equal((await planRestore(ctx, { kind: 'name', name: 'before' })).recovery.recovery_target_name, 'before');
  });

  it('refuses targets outside the archive and names the range', async () => {
    const { ctx } = await make();
    await assert.rejects(planRestore(ctx, { kind: 'time', time: new Date('2026-11-19T00:00:00Z') }), (e: BackupError) => e.code === 'TARGET_OUT_OF_RANGE' && /available: times 2026-11-20T00:00:10Z .*LSNs 0\/2000100 \.\. 0\/4000000/.test(e.message));
    await assert.rejects(planRestore(ctx, { kind: 'lsn', lsn: '0/4000001' }), /past the end of the archive/);
    await assert.rejects(planRestore(ctx, { kind: 'lsn', lsn: '0/1000000' }), /before the oldest backup/);
    await assert.rejects(planRestore(ctx, { kind: 'name', name: 'nope' }), /no restore point "nope".*known: before/);
    await assert.rejects(planRestore(ctx, { kind: 'latest' }, '20000101-000000F'), (e: BackupError) => e.code === 'BACKUP_UNKNOWN');
  });
});

describe('bootstrap from a backup', () => {
  it('finds the source cluster directory by name, or by its full directory name among several', () => {
    assert.deepEqual(sourceDirectory(['relevo-repository.json', 'prod-7301'], 'prod'), { dir: 'prod-7301', name: 'prod', systemIdentifier: '7301' });
    assert.deepEqual(sourceDirectory(['prod-7301', 'prod-7302'], 'prod-7302'), { dir: 'prod-7302', name: 'prod', systemIdentifier: '7302' });
    assert.throws(() => sourceDirectory(['prod-7301', 'prod-7302'], 'prod'), /several clusters named prod \(prod-7301, prod-7302\)/);
    assert.throws(() => sourceDirectory(['relevo-repository.json', 'test-1'], 'prod'), (e: BackupError) => e.code === 'BACKUP_UNKNOWN' && /it holds test-1/.test(e.message));
  });

  it('accepts at most one recovery target in the setting', () => {
    assert.equal(BackupSettingsSchema.safeParse({ bootstrapFrom: { cluster: 'prod', time: '2026-12-01T10:00:00Z' } }).success, true);
    assert.equal(BackupSettingsSchema.safeParse({ bootstrapFrom: { cluster: 'prod', time: '2026-12-01T10:00:00Z', lsn: '0/3000000' } }).success, false);
  });
});

describe('restoring one stored file', () => {
  const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
  /** Stores `content` as the backup does: one gzip object, or gzip members of `blockSize` bytes. */
  const stored = async (repository: DirectoryRepository, content: Buffer, blockSize?: number): Promise<BackupFile> => {
    const members = blockSize ? Array.from({ length: Math.ceil(content.length / blockSize) }, (_, i) => gzipSync(content.subarray(i * blockSize, (i + 1) * blockSize))) : [gzipSync(content)];
    const object = Buffer.concat(members);
    const path = `base/1/${blockSize ? 'big' : 'small'}`;
    await repository.putIfAbsent(`backups/B/data/${path}.gz`, object, { checksum: 'caller' });
    return { path, size: content.length, mtime: 0, mode: 0o600, sha256: sha(content), ref: 'B', storedSize: object.length, storedSha256: sha(object), ...(blockSize ? { blockSize, blocks: members.map((m) => m.length) } : {}) };
  };
  const content = Buffer.concat([randomBytes(50_000), Buffer.alloc(50_000, 3)]);

  for (const blockSize of [undefined, 16_384]) {
    it(`${blockSize ? 'in blocks' : 'whole'}: restores the content; a damaged object, or content that differs from the record, is refused`, async () => {
      const dir = scratch();
      const repository = new DirectoryRepository(join(dir, 'repo'));
      const file = await stored(repository, content, blockSize);
      await restoreFile(repository, file, join(dir, 'out'));
      assert.ok(readFileSync(join(dir, 'out')).equals(content));
      // An intact object whose content is not what the backup recorded.
      await assert.rejects(restoreFile(repository, { ...file, sha256: '0'.repeat(64) }, join(dir, 'other')), /restores with sha256/);
      const object = join(dir, 'repo', 'backups', 'B', 'data', `${file.path}.gz`);
      const bytes = readFileSync(object);
      bytes[bytes.length - 20] = bytes[bytes.length - 20]! ^ 0xff;
      writeFileSync(object, bytes);
      await assert.rejects(restoreFile(repository, file, join(dir, 'damaged')), (e: BackupError) => e.code === 'BACKUP_CORRUPT' && e.message.includes(file.path));
    });
  }
});
