import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { RecordUnreadableError } from '../cluster/records.js';
import { ClusterSettingsSchema, type ClusterSettings } from '../cluster/settings.js';
import { readStoredSettings, writeStoredSettings, type StoredSettings } from '../cluster/settings-store.js';
import { describeIssues } from '../config/load.js';
import { CliError, EXIT, type ClusterHandle } from './context.js';

export async function readSettings(handle: ClusterHandle): Promise<StoredSettings> {
  try {
    return await readStoredSettings(handle.store, handle.keys);
  } catch (error) {
    if (error instanceof RecordUnreadableError) throw new CliError('RECORD_UNREADABLE', error.message);
    throw error;
  }
}

function validate(candidate: unknown): ClusterSettings {
  const result = ClusterSettingsSchema.safeParse(candidate);
  if (!result.success) throw new CliError('INVALID_SETTINGS', `invalid cluster settings, nothing changed:\n${describeIssues(candidate, result.error).map((l) => `  - ${l}`).join('\n')}`);
  return result.data;
}

/** Writes the next generation only if nobody changed the settings since we read them. */
async function writeSettings(handle: ClusterHandle, settings: ClusterSettings, read: StoredSettings): Promise<void> {
  if (!(await writeStoredSettings(handle.store, handle.keys, settings, read))) {
    throw new CliError('CONCURRENT_CHANGE', 'cluster settings changed while editing; nothing written, run the command again');
  }
}

/** `a.b.c=value` → sets the nested key; value parsed as YAML scalar (numbers, booleans, strings). */
export function applyAssignment(settings: Record<string, unknown>, assignment: string): Record<string, unknown> {
  const index = assignment.indexOf('=');
  if (index <= 0) throw new CliError('BAD_ARGUMENT', `"${assignment}": expected key=value, e.g. ttlMs=20000 or postgresql.work_mem=16MB`);
  const path = assignment.slice(0, index).split('.');
  const raw = assignment.slice(index + 1);
  const value: unknown = raw === '' ? null : parseYaml(raw);
  const copy = structuredClone(settings);
  // postgresql.<name> keeps parameter names with dots (e.g. auto_explain.log_min_duration) whole.
  const segments = path[0] === 'postgresql' && path.length > 2 ? ['postgresql', path.slice(1).join('.')] : path;
  let node: Record<string, unknown> = copy;
  for (const segment of segments.slice(0, -1)) {
    if (typeof node[segment] !== 'object' || node[segment] === null) node[segment] = {};
    node = node[segment] as Record<string, unknown>;
  }
  const last = segments[segments.length - 1]!;
  if (value === null) delete node[last];
  else node[last] = value;
  return copy;
}

export async function showSettings(handle: ClusterHandle): Promise<string> {
  return stringifyYaml((await readSettings(handle)).settings);
}

export async function setSettings(handle: ClusterHandle, assignments: string[]): Promise<ClusterSettings> {
  const read = await readSettings(handle);
  let candidate: Record<string, unknown> = read.settings;
  for (const assignment of assignments) candidate = applyAssignment(candidate, assignment);
  const validated = validate(candidate);
  await writeSettings(handle, validated, read);
  return validated;
}

export async function editSettings(handle: ClusterHandle): Promise<ClusterSettings | undefined> {
  const read = await readSettings(handle);
  const settings = read.settings;
  const dir = mkdtempSync(join(tmpdir(), 'relevo-config-'));
  const file = join(dir, 'cluster.yaml');
  try {
    const before = stringifyYaml(settings);
    writeFileSync(file, before, { mode: 0o600 });
    execFileSync(process.env.VISUAL ?? process.env.EDITOR ?? 'vi', [file], { stdio: 'inherit' });
    const after = readFileSync(file, 'utf8');
    if (after === before) return undefined;
    let parsed: unknown;
    try {
      parsed = parseYaml(after);
    } catch (error) {
      throw new CliError('INVALID_SETTINGS', `edited settings are not valid YAML (${(error as Error).message}); nothing changed`);
    }
    const validated = validate(parsed);
    await writeSettings(handle, validated, read);
    return validated;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
