import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { MemberConfigSchema, type MemberConfig } from './member.js';

/** A configuration problem the operator can fix: names the file, the key, the value and what is expected. */
export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    super(`invalid configuration ${file}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

function describeValue(value: unknown): string {
  if (value === undefined) return 'missing';
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function valueAt(root: unknown, path: PropertyKey[]): unknown {
  let node: unknown = root;
  for (const part of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<PropertyKey, unknown>)[part];
  }
  return node;
}

/** Turns zod issues into lines like `postgres.port: got "abc", expected number`. */
export function describeIssues(input: unknown, error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const path = issue.path.map(String).join('.') || '(top level)';
    if (issue.code === 'unrecognized_keys') {
      return `${path}: unknown key(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}; remove or correct them`;
    }
    const got = describeValue(valueAt(input, issue.path));
    return `${path}: got ${got}; ${issue.message}`;
  });
}

export function parseMemberConfig(text: string, file: string): MemberConfig {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    throw new ConfigError(file, [`not valid YAML: ${(error as Error).message}`]);
  }
  if (raw === null || typeof raw !== 'object') throw new ConfigError(file, ['expected a YAML mapping at the top level']);
  const result = MemberConfigSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(file, describeIssues(raw, result.error));
  return result.data;
}

export function loadMemberConfig(file: string): MemberConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(file, [`cannot read the file: ${(error as NodeJS.ErrnoException).code ?? String(error)}`]);
  }
  return parseMemberConfig(text, file);
}
