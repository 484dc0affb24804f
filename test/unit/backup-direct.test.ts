import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { feedDataDir, listDataDir, READ_BYTES } from '../../src/backup/direct.js';
import type { TarEntry, TarSink } from '../../src/backup/tar.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A data directory with one of each kind of thing a base backup copies or skips. */
function dataDir(files: Record<string, string | Buffer>): string {
  const root = mkdtempSync(join(tmpdir(), 'relevo-unit-direct-'));
  dirs.push(root);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), content);
  }
  return root;
}

/** Collects what the sink gets: each file's bytes, as a tar stream's reader would hand them on. */
function collector(onEntry: (entry: TarEntry) => void = () => undefined): { sink: TarSink; got: Map<string, Buffer>; entries: TarEntry[] } {
  const got = new Map<string, Buffer>();
  const entries: TarEntry[] = [];
  const sink: TarSink = {
    entry(entry) {
      entries.push(entry);
      onEntry(entry);
      if (entry.type !== 'file') return undefined;
      const chunks: Buffer[] = [];
      return { write: (chunk) => void chunks.push(Buffer.from(chunk)), end: () => void got.set(entry.name, Buffer.concat(chunks)) };
    },
  };
  return { sink, got, entries };
}

describe('direct read of a data directory', () => {
  it('lists what pg_basebackup copies: no WAL, runtime files, temporary or unlogged relations; pg_control last', async () => {
    const root = dataDir({
      'global/pg_control': 'control',
      'global/1262': 'db',
      'base/1/16384': 'rel',
      'base/1/16384_fsm': 'fsm',
      'base/1/16385': 'unlogged main',
      'base/1/16385_init': 'unlogged init',
      'base/1/16385_vm': 'unlogged vm',
      'base/1/t3_16386': 'temp',
      'base/1/pg_internal.init': 'relcache',
      'base/pgsql_tmp/pgsql_tmp1.0': 'sort',
      'pg_wal/000000010000000000000001': 'wal',
      'pg_wal/archive_status/000000010000000000000001.done': '',
      'pg_replslot/s/state': 'slot',
      'pg_stat_tmp/x': 'stat',
      'pg_subtrans/0000': 'sub',
      'pg_xact/0000': 'xact',
      'postmaster.pid': '1',
      'postmaster.opts': 'x',
      backup_label: 'stale',
      'postgresql.conf': 'conf',
    });
    symlinkSync('/elsewhere', join(root, 'link'));
    const entries = await listDataDir(root);
    const names = entries.map((e) => `${e.type[0]} ${e.name}`);
    assert.deepEqual(names, [
      'd base',
      'd base/1',
      'f base/1/16384',
      'f base/1/16384_fsm',
      'f base/1/16385_init',
      'd global',
      'f global/1262',
      's link',
      'd pg_replslot',
      'd pg_stat_tmp',
      'd pg_subtrans',
      'd pg_wal',
      'd pg_wal/archive_status',
      'd pg_xact',
      'f pg_xact/0000',
      'f postgresql.conf',
      'f global/pg_control',
    ]);
    assert.equal(entries.find((e) => e.name === 'link')!.linkTarget, '/elsewhere');
  });

  it('leaves out a file that vanishes before it is read, and carries on', async () => {
    const root = dataDir({ 'global/pg_control': 'c', 'base/1/100': 'a', 'base/1/200': 'b', 'base/1/300': 'c' });
    const entries = await listDataDir(root);
    // A table dropped while the backup runs: its file goes after the listing.
    const { sink, got } = collector((e) => {
      if (e.name === 'base/1/100') unlinkSync(join(root, 'base/1/200'));
    });
    const stats = await feedDataDir(root, entries, sink, 8 * 1024 * 1024);
    assert.deepEqual(stats.vanished, ['base/1/200']);
    assert.deepEqual([...got.keys()], ['base/1/100', 'base/1/300', 'global/pg_control']);
    assert.equal(got.get('base/1/300')!.toString(), 'c');
  });

  it('reads a relation extended while it is read up to its listed size, and pads one that shrank with zeros', async () => {
    const big = Buffer.alloc(READ_BYTES + 8192, 7);
    const root = dataDir({ 'global/pg_control': 'c', 'base/1/100': big, 'base/1/200': Buffer.alloc(16384, 9) });
    const entries = await listDataDir(root);
    const { sink, got } = collector((e) => {
      // The server extends one relation and truncates the other under the reader.
      if (e.name === 'base/1/100') appendFileSync(join(root, 'base/1/100'), Buffer.alloc(8192, 1));
      if (e.name === 'base/1/200') truncateSync(join(root, 'base/1/200'), 8192);
    });
    // Everything over 1 kB read in READ_BYTES chunks through one reused buffer.
    const stats = await feedDataDir(root, entries, sink, 1024);
    assert.deepEqual(got.get('base/1/100'), big, 'the appended page is left to WAL replay');
    assert.deepEqual(got.get('base/1/200'), Buffer.concat([Buffer.alloc(8192, 9), Buffer.alloc(8192, 0)]));
    assert.deepEqual(stats.shrunk, ['base/1/200']);
    assert.equal(stats.bytes, big.length + 16384 + 1);
  });
});
