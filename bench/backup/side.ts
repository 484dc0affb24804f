/**
 * relevo's side of bench/backup, run as its own process under /usr/bin/time so
 * its CPU seconds (node plus pg_basebackup) are measured like the other tools'.
 *   node side.js backup  <json ctx> full|incremental
 *   node side.js restore <json ctx> <destination>
 */
import type { BackupContext } from '../../src/backup/context.js';
import { BackupSettingsSchema } from '../../src/cluster/backup-settings.js';
import type { MemberStatus } from '../../src/cluster/types.js';
import { openClusterRepository } from '../../src/backup/catalog.js';
import { planRestore, restoreBackup } from '../../src/backup/restore.js';
import { takeBackup } from '../../src/backup/take.js';
import { lookupOsUser } from '../../src/util/os-user.js';

export interface SideContext {
  repository: string;
  systemIdentifier: string;
  address: string;
  password: string;
  compressLevel: number;
  parallel: number;
  /** The data directory and socket of the benchmarked server: relevo reads the files directly (unset: through pg_basebackup). */
  local?: { dataDir: string; socketDir: string; port: number };
}

const [command, json, arg] = process.argv.slice(2);
const side = JSON.parse(json!) as SideContext;
const ctx: BackupContext = {
  cluster: 'bench',
  systemIdentifier: side.systemIdentifier,
  settings: BackupSettingsSchema.parse({ repository: side.repository, compressLevel: side.compressLevel, parallel: side.parallel }),
  repository: openClusterRepository(side.repository, 'bench', side.systemIdentifier),
  credentials: { agentPassword: side.password, replicationPassword: side.password },
  binDir: '/usr/lib/postgresql/15/bin',
  osUser: lookupOsUser('postgres'),
  members: [{ name: 'pg', role: 'primary', state: 'primary', streaming: false, connectAddress: side.address, systemIdentifier: side.systemIdentifier } as MemberStatus],
  leader: 'pg',
  ...(side.local ? { local: { member: 'pg', ...side.local } } : {}),
  note: (line) => console.error(line),
};

if (command === 'backup') {
  const record = await takeBackup(ctx, { type: arg === 'incremental' ? 'incremental' : 'full', fromPrimary: true });
  console.log(JSON.stringify({ id: record.id, sizeBytes: record.sizeBytes, storedBytes: record.storedBytes, durationMs: record.durationMs }));
} else if (command === 'restore') {
  const plan = await planRestore(ctx, { kind: 'immediate' });
  const result = await restoreBackup(ctx, plan, arg!);
  console.log(JSON.stringify(result));
} else {
  throw new Error(`unknown command ${command}`);
}
