import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { countDifferences } from '../../src/upgrade/data.js';
import { UPGRADE_ERRORS } from '../../src/upgrade/errors.js';
import { UPGRADE_STEPS } from '../../src/upgrade/state.js';

const doc = readFileSync(new URL('../../../docs/upgrade.md', import.meta.url), 'utf8');

describe('docs/upgrade.md', () => {
  it('lists every error code with its exit code', () => {
    for (const [code, { exit }] of Object.entries(UPGRADE_ERRORS)) {
      assert.match(doc, new RegExp(`\\| \`${code}\` \\| ${exit} \\|`), `docs/upgrade.md lacks the row of ${code} (exit ${exit})`);
    }
  });

  it('describes every step', () => {
    for (const step of UPGRADE_STEPS) assert.ok(doc.includes(`| \`${step}\` |`), `docs/upgrade.md lacks step ${step}`);
  });
});

describe('countDifferences', () => {
  it('names each table whose count differs or that one side lacks', () => {
    assert.deepEqual(countDifferences({ 'public.a': 1, 'public.b': 2 }, { 'public.a': 1, 'public.b': 3, 'public.c': 0 }), ['public.b: 2 vs 3', 'public.c: missing vs 0']);
    assert.deepEqual(countDifferences({ 'public.a': 1 }, { 'public.a': 1 }), []);
  });
});
