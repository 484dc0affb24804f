import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { describeIssues } from '../util/issues.js';
import { MemberConfigSchema, type MemberConfig } from './member.js';
import { secretFileProblems } from './secrets.js';

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
    // Only the first line: the parser's code frame quotes the offending line, which may hold a secret.
    throw new ConfigError(file, [`not valid YAML: ${(error as Error).message.split('\n')[0]}`]);
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

/**
 * The member file plus the files it points at: every secret file must follow
 * the 0600 rule. For `relevo config check` and agent start, which must refuse
 * before anything runs; other commands check a secret file when they read it.
 */
export function loadMemberConfigChecked(file: string): MemberConfig {
  const config = loadMemberConfig(file);
  const problems = secretFileProblems(config);
  if (problems.length > 0) throw new ConfigError(file, problems);
  return config;
}
