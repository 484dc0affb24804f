import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { HistoryEntry } from '../../src/cluster/types.js';
import { historyFileName, historyFileText, writeMissingHistoryFiles } from '../../src/postgres/timeline-files.js';
import { timelineSwitchPoint } from '../../src/postgres/datadir.js';

const entry = (timeline: number, lsn: string, to: string): HistoryEntry => ({ timeline, from: null, to, reason: 'leader lease expired', lsn, at: 'x' });
const me = { name: 'me', uid: process.getuid!(), gid: process.getgid!(), home: '/' };

describe('timeline history files written before a promotion', () => {
  it('chaos seed 2027, isolate-primary-outbound: a standby that never received 3.history and 4.history gets them, so its promotion takes timeline 5, not a reused 3', () => {
    const dir = mkdtempSync(join(tmpdir(), 'relevo-tli-'));
    try {
      const pgWal = join(dir, 'pg_wal');
      mkdirSync(pgWal, { mode: 0o700 });
      // The standby followed timeline 2 only; node2 started 3, node1 started 4 while this one was cut off.
      writeFileSync(join(pgWal, historyFileName(2)), '1\t0/3000060\tno recovery target specified\n');
      const history = [entry(2, '0/3000060', 'node3'), entry(3, '0/5000100', 'node2'), entry(4, '0/7000028', 'node1')];
      const written = writeMissingHistoryFiles(dir, me, history, 1, 4);
      assert.deepEqual(written, [3, 4]);
      assert.deepEqual(readdirSync(pgWal).sort(), ['00000002.history', '00000003.history', '00000004.history']);
      // PostgreSQL reads the switch point from the last line; ours parses it as PostgreSQL would.
      assert.deepEqual(timelineSwitchPoint(dir, 4), { parent: 3, lsn: '0/7000028' });
      assert.deepEqual(timelineSwitchPoint(dir, 3), { parent: 2, lsn: '0/5000100' });
      // The file it already had is left alone; a second call writes nothing.
      assert.equal(readFileSync(join(pgWal, historyFileName(2)), 'utf8'), '1\t0/3000060\tno recovery target specified\n');
      assert.deepEqual(writeMissingHistoryFiles(dir, me, history, 1, 4), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('one line per switch, oldest first; entries without a fork position or with a reused number are left out', () => {
    const text = historyFileText([entry(2, '0/3000060', 'a'), { ...entry(3, '0/4000000', 'b'), lsn: null }, entry(3, '0/5000000', 'c'), entry(3, '0/6000000', 'd'), entry(5, '0/9000000', 'e')], 4);
    assert.deepEqual(
      text.trim().split('\n').map((l) => l.split('\t').slice(0, 2).join(' ')),
      ['1 0/3000060', '2 0/5000000'],
    );
    assert.equal(historyFileName(26), '0000001A.history');
  });
});
