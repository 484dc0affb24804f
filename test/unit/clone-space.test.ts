import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { outcomeOf } from '../../src/agent/outcome.js';
import { checkCloneSpace, movedAsideCopies } from '../../src/postgres/space.js';

describe('free space before a reclone', () => {
  it('chaos seed 4242, wal-disk-full: a clone that cannot fit beside the moved-aside copies is refused with CLONE_NO_SPACE naming each copy', () => {
    const dir = mkdtempSync(join(tmpdir(), 'relevo-space-'));
    try {
      const dataDir = join(dir, 'data');
      mkdirSync(dataDir);
      for (const stamp of ['2026-12-01T06-39-00-000Z', '2026-12-01T06-40-00-000Z']) {
        const copy = join(dir, `data.moved-${stamp}`);
        mkdirSync(join(copy, 'pg_wal'), { recursive: true });
        writeFileSync(join(copy, 'base'), Buffer.alloc(2 * 1024 * 1024, 1));
        writeFileSync(join(copy, 'pg_wal', 'seg'), Buffer.alloc(4 * 1024 * 1024, 1));
      }
      writeFileSync(join(dir, 'other.moved-x'), 'not ours');
      const copies = movedAsideCopies(dataDir);
      assert.deepEqual(copies.map((c) => c.path.slice(dir.length + 1)), ['data.moved-2026-12-01T06-40-00-000Z', 'data.moved-2026-12-01T06-39-00-000Z'], 'newest first, only this data directory\'s');
      assert.ok(copies[0]!.bytes >= 6 * 1024 * 1024);
      // Needed: the newest copy without its pg_wal (2 MB) + 64 MB of room.
      const refused = checkCloneSpace(dataDir, copies, 10 * 1024 * 1024);
      assert.ok(refused);
      assert.equal(refused.code, 'CLONE_NO_SPACE');
      for (const c of copies) assert.ok(refused.message.includes(c.path), refused.message);
      const outcome = outcomeOf('clone', refused);
      assert.equal(outcome.result === 'failed' && outcome.code, 'CLONE_NO_SPACE');
      assert.equal(outcome.result === 'failed' && outcome.retryable, true);
      assert.equal(checkCloneSpace(dataDir, copies, 200 * 1024 * 1024), undefined, 'enough room: cloned');
      assert.equal(checkCloneSpace(dataDir, [], 0), undefined, 'no copy: nothing to estimate from, pg_basebackup finds out');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
