import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { ClusterSettingsSchema } from '../../src/cluster/settings.js';
import { MemberConfigSchema } from '../../src/config/member.js';

/** Dotted key paths of an object schema, descending into nested objects (not records). */
function keyPaths(schema: z.ZodType, prefix = ''): string[] {
  let inner: z.ZodType = schema;
  for (;;) {
    const def = (inner as unknown as { def: { type: string; innerType?: z.ZodType; in?: z.ZodType } }).def;
    if (def.type === 'default' || def.type === 'optional' || def.type === 'nullable') inner = def.innerType!;
    else if (def.type === 'pipe') inner = def.in!;
    else break;
  }
  if (inner instanceof z.ZodObject) {
    return Object.entries(inner.shape as Record<string, z.ZodType>).flatMap(([key, value]) => {
      const path = prefix ? `${prefix}.${key}` : key;
      const nested = keyPaths(value, path);
      return nested.length > 0 ? nested : [path];
    });
  }
  if (inner instanceof z.ZodDiscriminatedUnion) return inner.options.flatMap((o) => keyPaths(o as z.ZodType, prefix));
  return [];
}

describe('docs/configuration.md', () => {
  const doc = readFileSync(new URL('../../../docs/configuration.md', import.meta.url), 'utf8');
  it('describes every key of the member file and of the cluster settings', () => {
    const keys = new Set([...keyPaths(MemberConfigSchema), ...keyPaths(ClusterSettingsSchema)]);
    assert.ok(keys.size > 30, `found ${keys.size} keys`);
    const missing = [...keys].filter((k) => !doc.includes(`\`${k}\``) && !(k.startsWith('api.auth.') && doc.includes('`api.auth`')));
    assert.deepEqual(missing, []);
  });
});
