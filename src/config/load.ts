import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { describeIssues } from '../util/issues.js';
import { MemberConfigSchema, type MemberConfig } from './member.js';

export { describeIssues };

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
