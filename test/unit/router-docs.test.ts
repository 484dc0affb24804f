/** docs/router.md must document every message code and option the router has. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { closures, refusals } from '../../src/router/errors.js';
import { RouterSettingsSchema } from '../../src/router/options.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const doc = readFileSync(join(root, 'docs/router.md'), 'utf8');

describe('docs/router.md', () => {
  it('names every refusal and closure code', () => {
    for (const code of [...Object.keys(refusals), ...Object.keys(closures)]) {
      assert.ok(doc.includes(`\`${code}\``), `docs/router.md does not mention \`${code}\``);
    }
  });

  it('documents every option with its default', () => {
    const defaults = RouterSettingsSchema.parse({ name: 'r', cluster: 'c' });
    const flat: Array<[string, unknown]> = [];
    for (const [k, v] of Object.entries(defaults)) {
      if (v !== null && typeof v === 'object') for (const [k2, v2] of Object.entries(v)) flat.push([`${k}.${k2}`, v2]);
      else flat.push([k, v]);
    }
    for (const [key] of flat) {
      assert.match(doc, new RegExp(`\\| \`${key.replace('.', '\\.')}\` \\|`), `option ${key} missing from the options table`);
    }
  });

  it('states the SQLSTATE of every message', () => {
    const sample = (make: (...a: never[]) => { code: string }) => make(...([{ ageMs: 1, ttlMs: 1, member: 'm', address: 'a', error: 'e', heldMs: 1, reason: 'r', excluded: [], timeoutMs: 1 }] as never[])).code;
    for (const make of [...Object.values(refusals), ...Object.values(closures)]) {
      const code = sample(make as never);
      assert.ok(doc.includes(`\`${code}\``), `SQLSTATE ${code} not in docs`);
    }
  });
});
