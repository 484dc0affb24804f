/**
 * Work the agent does beside the HA decision, each cycle, without touching it:
 * - certificates: re-issue this member's certificate when `relevo certs rotate`
 *   bumped the rotation generation in the store, or when it nears its end;
 *   then reload PostgreSQL (it rereads ssl_* files on SIGHUP) and the API;
 * - CA rotation: apply the phase of a signed `relevo certs rotate --ca` record;
 * - secrets: when the secrets file changed (`relevo secrets rotate`), take the
 *   new passwords and rewrite the passfile that the walreceiver and
 *   pg_basebackup read at their next connection. Sessions already open keep going.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { Logger } from 'pino';
import type { ClusterKeys } from '../cluster/keys.js';
import type { MemberConfig } from '../config/member.js';
import { loadCredentials, type Credentials } from '../config/secrets.js';
import { writePassfile } from '../postgres/conf.js';
import { runningPostmasterPid } from '../postgres/datadir.js';
import type { LocalPostgres } from '../postgres/local.js';
import { reloadPostgres } from '../postgres/postmaster.js';
import type { KeyValue, Store } from '../store/store.js';
import { CaRotationError, checkCaRotation, parseCaRotation, splitPem, type CaRotationRecord, type CaRotationReport } from '../tls/ca-rotation.js';
import { applyCaDir } from '../tls/ca-rotation-files.js';
import { caFilesOf, ensureMemberCert, memberTlsFiles } from '../tls/member.js';
import { issuedBy } from '../tls/pki.js';

/** How often the CA rotation record is looked at while none runs; while one runs, at every cycle. */
const ROTATION_POLL_MS = 2_000;
const RENEWAL_CHECK_MS = 3600_000;
const CA_ROTATION_ACTIVE_POLL_MS = 0;

export function rotationGeneration(value: string | undefined): number {
  if (value === undefined) return 0;
  const parsed = JSON.parse(value) as { generation?: unknown };
  return typeof parsed.generation === 'number' ? parsed.generation : 0;
}

export class Upkeep {
  private appliedGeneration: number | undefined;
  /** The rotation record's text at the last look (undefined: absent; null: not looked yet). */
  private lastRotationValue: string | undefined | null = null;
  private lastRenewalCheck = performance.now();
  private secretsStamp: string | undefined;
  private lastCaRotationPoll = -Infinity;
  /** The record value last applied and reported. */
  private appliedCaRotation: string | undefined;
  private lastCaReport: CaRotationReport | undefined;
  private caRotationRunning = false;

  constructor(
    private readonly config: MemberConfig,
    private readonly local: LocalPostgres,
    private readonly store: Store,
    private readonly keys: ClusterKeys,
    private readonly log: Logger,
    /** Called after this member's certificate changed (the API swaps its TLS context). */
    private readonly onCertificateChanged: () => void,
  ) {
    this.secretsStamp = this.stampOfSecrets();
  }

  /**
   * Certificates: never throws; a failure is logged and retried next time.
   * `rotation` is the rotation record as the cycle's read of the cluster subtree found it (undefined: absent):
   * reading it again here cost a store round trip every 2 s.
   */
  async certificates(rotation: KeyValue | undefined): Promise<void> {
    if (!this.local.tls) return;
    const now = performance.now();
    let force = false;
    if (rotation?.value !== this.lastRotationValue) {
      this.lastRotationValue = rotation?.value;
      try {
        const generation = rotationGeneration(rotation?.value);
        // The first look only learns the generation: the certificate was checked at start.
        if (this.appliedGeneration !== undefined && generation > this.appliedGeneration) force = true;
        else this.appliedGeneration ??= generation;
        if (force) this.appliedGeneration = generation;
      } catch (error) {
        this.log.warn({ err: (error as Error).message }, 'cannot read the certificate rotation request from the store');
      }
    }
    if (!force && now - this.lastRenewalCheck < RENEWAL_CHECK_MS) return;
    this.lastRenewalCheck = now;
    try {
      const result = await ensureMemberCert(this.config, this.local.user, { force, now: new Date() });
      if (!result.changed) return;
      if (runningPostmasterPid(this.local.dataDir) !== undefined) await reloadPostgres(this.local.postmaster);
      this.onCertificateChanged();
      this.log.info({ fingerprint: result.fingerprint }, `member certificate re-issued (${result.reason}); PostgreSQL and the API reloaded it`);
    } catch (error) {
      this.log.error({ err: (error as Error).message, code: (error as { code?: string }).code }, `cannot renew the certificate of member ${this.config.name}: ${(error as Error).message}`);
    }
  }

  /**
   * CA rotation (`relevo certs rotate --ca`): when the signed record in the
   * store names a phase this member has not applied, check its signature
   * against the CAs this member trusts now, bring the CA directory and the
   * member certificate to that phase, reload PostgreSQL and the API, and
   * report. Never throws: a refusal or failure is reported and logged.
   */
  async caRotation(kv: KeyValue | undefined): Promise<void> {
    if (!this.local.tls) return;
    const now = performance.now();
    // While a rotation runs, look more often: each phase waits for the slowest member.
    if (now - this.lastCaRotationPoll < (this.caRotationRunning ? CA_ROTATION_ACTIVE_POLL_MS : ROTATION_POLL_MS)) return;
    this.lastCaRotationPoll = now;
    let report: CaRotationReport;
    try {
      if (!kv) return;
      const record = parseCaRotation(kv.value);
      this.caRotationRunning = record.phase !== 'done';
      if (kv.value === this.appliedCaRotation) return;
      report = await this.applyCaRotation(record);
      if (report.applied) this.appliedCaRotation = kv.value;
    } catch (error) {
      const code = (error as { code?: string }).code;
      this.log.error({ err: (error as Error).message, code }, `CA rotation: ${(error as Error).message}`);
      report = { id: this.lastCaReport?.id ?? '', phase: this.lastCaReport?.phase ?? 'trust', applied: false, detail: `${code ?? 'ERROR'}: ${(error as Error).message}` };
    }
    if (JSON.stringify(report) === JSON.stringify(this.lastCaReport)) return;
    try {
      await this.store.put(this.keys.caRotationReport(this.config.name), JSON.stringify(report));
      this.lastCaReport = report;
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, 'cannot write the CA rotation report to the store');
    }
  }

  private async applyCaRotation(record: CaRotationRecord): Promise<CaRotationReport> {
    const ca = caFilesOf(this.config);
    const base = { id: record.id, phase: record.phase };
    try {
      checkCaRotation(this.config.cluster, record, readFileSync(ca.cert, 'utf8'));
    } catch (error) {
      // A record not signed by a CA we trust is never applied, whatever it says.
      if (error instanceof CaRotationError) {
        this.log.error({ code: error.code }, error.message);
        return { ...base, applied: false, detail: `${error.code}: ${error.message}` };
      }
      throw error;
    }
    const step = applyCaDir(ca, record);
    if (step.waiting) {
      this.log.warn({ phase: record.phase }, `CA rotation: ${step.waiting}`);
      return { ...base, applied: false, detail: step.waiting };
    }
    const cert = await ensureMemberCert(this.config, this.local.user, { force: false, now: new Date() });
    if (step.changed || cert.changed) {
      if (runningPostmasterPid(this.local.dataDir) !== undefined) await reloadPostgres(this.local.postmaster);
      this.onCertificateChanged();
      this.log.info({ phase: record.phase, fingerprint: cert.fingerprint }, `CA rotation ${record.id}: phase ${record.phase} applied (${cert.reason}); PostgreSQL and the API reloaded`);
    }
    // From reissue on, applied means serving a certificate of the new CA (pre-issued tls.cert files are the operator's to replace).
    if (record.phase !== 'trust' && !issuedBy(readFileSync(memberTlsFiles(this.config)!.cert, 'utf8'), record.newCa)) {
      return { ...base, applied: false, detail: `the member certificate is not from the new CA yet${this.config.tls.cert ? `: install one from the new CA as ${this.config.tls.cert}` : ''}` };
    }
    const trusted = splitPem(record.bundle).length;
    return { ...base, applied: true, detail: `trusts ${trusted} CA(s); certificate ${cert.fingerprint.slice(0, 23)}…` };
  }

  /** New credentials when the secrets file changed since the last look; the passfile is rewritten first. */
  secrets(current: Credentials | undefined): Credentials | undefined {
    const stamp = this.stampOfSecrets();
    if (stamp === this.secretsStamp) return undefined;
    this.secretsStamp = stamp;
    try {
      const loaded = loadCredentials(this.config);
      if (!loaded || (current && loaded.agentPassword === current.agentPassword && loaded.replicationPassword === current.replicationPassword)) return undefined;
      if (current && existsSync(this.local.passfile)) {
        writePassfile(this.local.passfile, this.local.user, loaded);
        this.log.info('role passwords changed in the secrets file: passfile rewritten, new connections use them');
      }
      return loaded;
    } catch (error) {
      this.log.error({ err: (error as Error).message }, 'cannot read the changed secrets file; keeping the current passwords');
      return undefined;
    }
  }

  private stampOfSecrets(): string | undefined {
    try {
      const s = statSync(this.config.secrets.file);
      return `${s.ino}:${s.mtimeMs}:${s.size}`;
    } catch {
      return undefined;
    }
  }
}
