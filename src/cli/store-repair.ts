import { parseRecord, RECORD_SCHEMAS, recordKindOf, repairHint } from '../cluster/records.js';
import { readCluster } from '../cluster/view.js';
import { CliError, EXIT, type ClusterHandle } from './context.js';

export interface RepairOptions {
  /** Delete this unreadable record (compare-and-swap on the revision read). */
  delete?: string;
  /** Rewrite this unreadable record with `value` (validated against the record's schema first). */
  set?: string;
  value?: string;
}

/** A key as the operator typed it: the full key, or relative to the cluster (`sync`, `members/node1`). */
function resolveKey(handle: ClusterHandle, key: string): string {
  const full = key.startsWith('/') ? key : `${handle.keys.root}${key}`;
  if (!recordKindOf(handle.keys, full)) {
    throw new CliError('BAD_ARGUMENT', `"${key}" is not a record of cluster ${handle.config.cluster}: expected a key under ${handle.keys.root} such as sync, leader, history, config or members/<name>`);
  }
  return full;
}

/** Shows what a record held, on one line and bounded (records hold no secrets). */
function shown(value: string): string {
  const text = JSON.stringify(value);
  return text.length > 200 ? `${text.slice(0, 200)}…"` : text;
}

async function listUnreadable(handle: ClusterHandle): Promise<string> {
  const { view } = await readCluster(handle.store, handle.keys);
  if (!view.reachable) throw new CliError('STORE_UNREACHABLE', view.error);
  if (view.unreadable.length === 0) return `no unreadable records under ${handle.keys.root}`;
  const lines = view.unreadable.map((r) => `${r.key} (revision ${r.revision}): ${r.problem}\n  ${repairHint(r)}`);
  return `${view.unreadable.length} unreadable record(s) (RECORD_UNREADABLE):\n${lines.join('\n')}`;
}

/**
 * `relevo store repair`: lists the records that fail to parse; with --delete
 * or --set, changes one of them — only if it is still unreadable and still at
 * the revision read — and prints what it changed. A readable record is
 * refused: it is changed by the commands that own it.
 */
export async function storeRepair(handle: ClusterHandle, options: RepairOptions): Promise<string> {
  if (options.delete !== undefined && options.set !== undefined) throw new CliError('BAD_ARGUMENT', 'give either --delete KEY or --set KEY --value JSON, not both');
  if (options.value !== undefined && options.set === undefined) throw new CliError('BAD_ARGUMENT', '--value needs --set KEY');
  const target = options.delete ?? options.set;
  if (target === undefined) return listUnreadable(handle);
  const key = resolveKey(handle, target);
  const { kind } = recordKindOf(handle.keys, key)!;
  const kv = await handle.store.get(key);
  if (!kv) throw new CliError('NO_RECORD', `no record at ${key}: nothing to repair`);
  const current = parseRecord<unknown>(RECORD_SCHEMAS[kind], kv.value);
  if (current.ok) throw new CliError('RECORD_READABLE', `record ${key} is readable: \`relevo store repair\` changes only unreadable records; nothing changed`);
  const was = `revision ${kv.revision}, held ${shown(kv.value)}: ${current.problem}`;
  if (options.delete !== undefined) {
    if (!(await handle.store.delete(key, kv.revision))) throw new CliError('CONCURRENT_CHANGE', `${key} changed while repairing; nothing deleted, run the command again`);
    return `deleted ${key} (${was})`;
  }
  if (options.value === undefined) throw new CliError('BAD_ARGUMENT', `--set ${target} needs --value JSON: the record to write, e.g. for ${kind} a value that passes its schema`);
  const replacement = parseRecord<unknown>(RECORD_SCHEMAS[kind], options.value);
  if (!replacement.ok) throw new CliError('BAD_ARGUMENT', `--value is not a valid ${kind} record: ${replacement.problem}; nothing changed`);
  // The key keeps its lease: a leader or member key must still vanish with its holder.
  const revision = await handle.store.compareAndSwap(key, JSON.stringify(replacement.value), kv.revision, kv.lease ? { lease: kv.lease } : undefined);
  if (revision === undefined) throw new CliError('CONCURRENT_CHANGE', `${key} changed while repairing; nothing written, run the command again`);
  return `rewrote ${key} at revision ${revision} (was ${was})`;
}
