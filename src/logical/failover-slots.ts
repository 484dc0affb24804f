/**
 * Logical slots that survive a failover on PostgreSQL 15 (no failover slots
 * there), the way Patroni keeps "permanent" logical slots before PostgreSQL 17:
 *
 *  1. the primary publishes its persistent logical slots (name, position, catalog_xmin);
 *  2. a replica missing one reads the slot's on-disk state from the primary
 *     (pg_read_binary_file, superuser) and asks its agent for a restart: a
 *     standby loads slots only at start, and PostgreSQL 15 cannot create a
 *     logical slot in recovery. While its server is stopped the file is written
 *     into pg_replslot/<name>/state (no-follow, temp file, fsync, rename);
 *  3. from then on the replica moves its copy forward with
 *     pg_replication_slot_advance() to the primary's confirmed_flush_lsn
 *     (never past what it has replayed);
 *  4. hot_standby_feedback (relevo's default) makes the primary keep, through
 *     the replica's physical slot, the catalog rows the copy needs
 *     (catalog_xmin). A copy counts as ready once the primary's physical slot for
 *     this replica shows a catalog_xmin at or before the copy's.
 *
 * docs/logical.md states what this guarantees and what it does not.
 */
import type pg from 'pg';
import type { FailoverSlotStatusSchema, LogicalProblem, LogicalStatus } from '../cluster/logical-status.js';
import type { z } from 'zod';
import { compareLsn } from '../postgres/lsn.js';
import { ensureOwnedDir, withOwnedDir } from '../postgres/owned-fs.js';
import { withConnection, type SqlTarget } from '../postgres/sql.js';
import type { OsUser } from '../util/os-user.js';
import { advanceSlot, dropLogicalSlot, readLogicalSlots, readSlotStateFile } from './sql.js';

type FailoverSlotStatus = z.infer<typeof FailoverSlotStatusSchema>;

/** ReplicationSlotOnDisk: magic, checksum, version, length, then the slot's name (NameData, 64 bytes). */
const SLOT_MAGIC = 0x1051ca1;
const NAME_OFFSET = 16;
const NAME_LENGTH = 64;
/** After a failed copy or advance, the slot is not tried again for this long. */
const RETRY_AFTER_MS = 60_000;
/** A copy ahead of the primary's slot for this long is dropped and copied again. */
const AHEAD_GRACE_MS = 30_000;
const AHEAD_QUIET_MS = 5_000;

/** The slot name a state file belongs to, or why it is not a slot state file. */
export function slotStateName(state: Buffer): { name: string } | { problem: string } {
  if (state.length < NAME_OFFSET + NAME_LENGTH) return { problem: `${state.length} bytes, too short for a slot state file` };
  if (state.readUInt32LE(0) !== SLOT_MAGIC) return { problem: `bad magic number 0x${state.readUInt32LE(0).toString(16)}` };
  const raw = state.subarray(NAME_OFFSET, NAME_OFFSET + NAME_LENGTH);
  const end = raw.indexOf(0);
  return { name: raw.subarray(0, end < 0 ? NAME_LENGTH : end).toString('utf8') };
}

/** xid a precedes or equals b, modulo 2^32 (as PostgreSQL compares normal xids). */
export function xidPrecedesOrEquals(a: string, b: string): boolean {
  return (Number(BigInt.asIntN(32, BigInt(a) - BigInt(b))) | 0) <= 0;
}

export interface PrimarySlots {
  slots: LogicalStatus['slots'];
  /** catalog_xmin of this replica's physical slot on the primary (hot_standby_feedback). */
  physicalCatalogXmin: string | null | undefined;
}

export class FailoverSlots {
  /** State files read from the primary, installed at the next start of this standby. */
  private readonly pending = new Map<string, Buffer>();
  private readonly retryAt = new Map<string, number>();
  /** Since when (ms) a copy has been ahead of the primary's slot. */
  private readonly aheadSince = new Map<string, number>();

  constructor(
    private readonly dataDir: string,
    private readonly user: OsUser,
  ) {}

  get waitingForRestart(): string[] {
    return [...this.pending.keys()];
  }

  /**
   * One round on a replica. Returns the copies' status, problems, and whether
   * a restart is needed to load newly copied slots.
   */
  async sync(
    client: pg.Client,
    primary: PrimarySlots,
    leaderTarget: () => SqlTarget,
    now: number,
  ): Promise<{ failoverSlots: FailoverSlotStatus[]; problems: LogicalProblem[]; restart: boolean }> {
    const problems: LogicalProblem[] = [];
    const statuses: FailoverSlotStatus[] = [];
    let restart = false;
    const local = await readLogicalSlots(client);
    const wanted = new Set(primary.slots.map((s) => s.name));
    for (const slot of primary.slots) {
      const copy = local.find((l) => l.name === slot.name);
      const status: FailoverSlotStatus = { name: slot.name, confirmedFlushLsn: copy?.confirmedFlushLsn ?? null, primaryConfirmedFlushLsn: slot.confirmedFlushLsn, ready: false, detail: '' };
      statuses.push(status);
      if (!copy) {
        if (this.pending.has(slot.name)) {
          status.detail = 'copied from the primary; loaded at the next restart of this replica';
          restart = true;
          continue;
        }
        if ((this.retryAt.get(slot.name) ?? 0) > now) {
          status.detail = 'not copied yet (retrying after an earlier failure)';
          continue;
        }
        try {
          const state = await withConnection(leaderTarget(), (leader) => readSlotStateFile(leader, slot.name));
          const parsed = slotStateName(state);
          if ('problem' in parsed || parsed.name !== slot.name) throw new Error(`pg_replslot/${slot.name}/state on the primary: ${'problem' in parsed ? parsed.problem : `names slot ${parsed.name}`}`);
          this.pending.set(slot.name, state);
          status.detail = 'copied from the primary; restarting this replica to load it';
          restart = true;
        } catch (error) {
          this.retryAt.set(slot.name, now + RETRY_AFTER_MS);
          status.detail = `copy failed: ${(error as Error).message}`;
          problems.push({ code: 'LOGICAL_SLOT_COPY_FAILED', object: 'slot', name: slot.name, database: slot.database, message: `LOGICAL_SLOT_COPY_FAILED: ${(error as Error).message}` });
        }
        continue;
      }
      this.pending.delete(slot.name);
      if (slot.confirmedFlushLsn && copy.confirmedFlushLsn && compareLsn(copy.confirmedFlushLsn, slot.confirmedFlushLsn) > 0) {
        // Right after a failover the new primary's slot may trail the copies made from the old one, until its
        // subscriber confirms again. A copy that stays ahead is a leftover of another timeline (a rewound former
        // primary): decoding from its position would read WAL that is not what it was made from. Copied again.
        const since = this.aheadSince.get(slot.name) ?? now;
        this.aheadSince.set(slot.name, since);
        status.detail = `ahead of the primary's slot (${copy.confirmedFlushLsn} > ${slot.confirmedFlushLsn}) since ${new Date(since).toISOString()}`;
        // A fresh copy may be ahead of the position the primary last published: not worth a word for a few seconds.
        if (now - since < AHEAD_QUIET_MS) continue;
        if (now - since > AHEAD_GRACE_MS && !copy.active) {
          await dropLogicalSlot(client, slot.name);
          this.aheadSince.delete(slot.name);
          status.detail = `dropped: it stayed ahead of the primary's slot for ${AHEAD_GRACE_MS / 1000} s (from another timeline?); copying it again`;
        }
        problems.push({ code: 'LOGICAL_SLOT_NOT_READY', object: 'slot', name: slot.name, database: slot.database, message: `LOGICAL_SLOT_NOT_READY: ${status.detail}` });
        continue;
      }
      this.aheadSince.delete(slot.name);
      let position = copy.confirmedFlushLsn;
      if (slot.confirmedFlushLsn && position && compareLsn(position, slot.confirmedFlushLsn) < 0 && (this.retryAt.get(slot.name) ?? 0) <= now) {
        try {
          position = await advanceSlot(client, slot.name, slot.confirmedFlushLsn);
          status.confirmedFlushLsn = position;
        } catch (error) {
          // Typically the WAL the copy starts from is gone here: drop it, copy it again later.
          this.retryAt.set(slot.name, now + RETRY_AFTER_MS);
          await dropLogicalSlot(client, slot.name).catch(() => undefined);
          problems.push({ code: 'LOGICAL_SLOT_ADVANCE_FAILED', object: 'slot', name: slot.name, database: slot.database, message: `LOGICAL_SLOT_ADVANCE_FAILED: ${(error as Error).message}; the copy was dropped and will be copied again` });
          status.detail = `advance failed: ${(error as Error).message}`;
          continue;
        }
      }
      const fed = primary.physicalCatalogXmin;
      const protectedByFeedback = fed != null && copy.catalogXmin !== null && xidPrecedesOrEquals(fed, copy.catalogXmin);
      status.ready = protectedByFeedback;
      status.detail = protectedByFeedback
        ? `follows the primary (${position ?? '?'} of ${slot.confirmedFlushLsn ?? '?'})`
        : `waiting for hot_standby_feedback to hold catalog_xmin ${copy.catalogXmin ?? '?'} on the primary (physical slot shows ${fed ?? 'none'})`;
      if (!protectedByFeedback) {
        problems.push({ code: 'LOGICAL_SLOT_NOT_READY', object: 'slot', name: slot.name, database: slot.database, message: `LOGICAL_SLOT_NOT_READY: ${status.detail}` });
      }
    }
    for (const extra of local.filter((l) => !wanted.has(l.name))) {
      // Gone on the primary (dropped there): a copy here would hold WAL and catalog rows for nothing.
      if (!extra.active) await dropLogicalSlot(client, extra.name);
    }
    for (const name of this.pending.keys()) if (!wanted.has(name)) this.pending.delete(name);
    return { failoverSlots: statuses, problems, restart };
  }

  /**
   * Called with this member's PostgreSQL stopped, right before it starts as a
   * standby: writes the copied state files into pg_replslot. Returns what it did.
   */
  install(): string | undefined {
    if (this.pending.size === 0) return undefined;
    const isStandby = withOwnedDir(this.dataDir, this.user, (dir) => dir.exists('standby.signal'));
    if (!isStandby) {
      // Promoted meanwhile: a primary keeps its own slots; stale copies must not replace them.
      this.pending.clear();
      return undefined;
    }
    const installed: string[] = [];
    for (const [name, state] of this.pending) {
      const dir = `${this.dataDir}/pg_replslot/${name}`;
      ensureOwnedDir(dir, this.user, 0o700);
      withOwnedDir(dir, this.user, (slotDir) => slotDir.write('state', state));
      installed.push(name);
    }
    this.pending.clear();
    return `installed logical slot ${installed.join(', ')} copied from the primary`;
  }
}
