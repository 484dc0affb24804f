/**
 * Linux's watchdog device (softdog, or a hardware one), as Patroni uses it:
 * while PostgreSQL runs as primary the fencer keeps the device open and
 * writes to it; if the fencer itself stops (frozen with the whole host's
 * user space, killed), the kernel resets the machine when the device's
 * timeout passes. Optional (`fence.watchdog`): `auto` uses it when present,
 * `required` refuses to let the member lead without it.
 *
 * Node cannot issue the WDIOC_SETTIMEOUT ioctl, so relevo does not set the
 * timeout: it reads it from sysfs and uses the device only when it fires
 * before the lease can expire (set it with `modprobe softdog soft_margin=N`).
 */
import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import type { WatchdogMode, WatchdogStatus } from './files.js';

export const WATCHDOG_UNAVAILABLE = 'E_WATCHDOG_UNAVAILABLE';

/** /dev/watchdog is watchdog0; /dev/watchdogN is watchdogN. */
export function sysfsTimeoutPath(device: string): string {
  const name = basename(device);
  return `/sys/class/watchdog/${name === 'watchdog' ? 'watchdog0' : name}/timeout`;
}

/**
 * Whether a device with `timeoutS` may guard a lease: it must fire within
 * ttlMs - fenceMarginMs of the last feed (pure).
 */
export function timeoutProblem(timeoutS: number | undefined, ttlMs: number, fenceMarginMs: number): string | undefined {
  if (timeoutS === undefined) return 'its timeout cannot be read from sysfs';
  if (timeoutS * 1000 > ttlMs - fenceMarginMs) return `its timeout ${timeoutS} s exceeds ttlMs - fenceMarginMs = ${ttlMs - fenceMarginMs} ms (set e.g. softdog soft_margin=${Math.max(1, Math.floor((ttlMs - fenceMarginMs) / 1000))})`;
  return undefined;
}

/**
 * While armed, a keepalive is written only when the device's timeout still
 * ends before the lease could expire: now + timeout <= renewal + ttlMs,
 * i.e. now <= deadline + fenceMarginMs - timeout (pure).
 */
export function mayKeepAlive(now: number, deadlineMs: number, fenceMarginMs: number, timeoutS: number): boolean {
  return now <= deadlineMs + fenceMarginMs - timeoutS * 1000;
}

export class Watchdog {
  private fd: number | undefined;
  private timeoutS: number | undefined;
  status: WatchdogStatus;

  constructor(
    readonly mode: WatchdogMode,
    readonly device = '/dev/watchdog',
  ) {
    this.status = mode === 'off' ? { mode, state: 'off', detail: 'not configured (fence.watchdog: off)' } : this.probe();
  }

  /** Looks for the device without opening it (opening starts the countdown). */
  private probe(): WatchdogStatus {
    if (!existsSync(this.device)) {
      return this.unusable(`${WATCHDOG_UNAVAILABLE}: no ${this.device} on this host (no softdog module loaded, no hardware watchdog): only the fencer's kill by PID protects a frozen primary`);
    }
    try {
      this.timeoutS = Number(readFileSync(sysfsTimeoutPath(this.device), 'utf8').trim());
      if (!Number.isFinite(this.timeoutS)) this.timeoutS = undefined;
    } catch {
      this.timeoutS = undefined;
    }
    return { mode: this.mode, state: 'idle', detail: `${this.device} present (timeout ${this.timeoutS ?? '?'} s); opened while primary` };
  }

  private unusable(detail: string): WatchdogStatus {
    return { mode: this.mode, state: this.mode === 'required' ? 'failed' : 'unavailable', detail };
  }

  get usable(): boolean {
    return this.status.state === 'idle' || this.status.state === 'active';
  }

  /** Called every tick while armed and not yet past the deadline. */
  keepAlive(now: number, deadlineMs: number, ttlMs: number, fenceMarginMs: number): void {
    if (!this.usable) return;
    const problem = timeoutProblem(this.timeoutS, ttlMs, fenceMarginMs);
    if (problem) {
      this.disarm();
      this.status = this.unusable(`${WATCHDOG_UNAVAILABLE}: ${this.device} not used: ${problem}`);
      return;
    }
    if (!mayKeepAlive(now, deadlineMs, fenceMarginMs, this.timeoutS!)) return;
    try {
      if (this.fd === undefined) this.fd = openSync(this.device, 'w');
      writeSync(this.fd, '1');
      this.status = { mode: this.mode, state: 'active', detail: `${this.device} armed (timeout ${this.timeoutS} s): a fencer that stops feeding it resets the host` };
    } catch (error) {
      this.fd = undefined;
      this.status = this.unusable(`${WATCHDOG_UNAVAILABLE}: cannot write ${this.device}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
    }
  }

  /** Not primary any more: the magic close ('V') stops the countdown (unless the driver has nowayout). */
  disarm(): void {
    if (this.fd === undefined) return;
    try {
      writeSync(this.fd, 'V');
      closeSync(this.fd);
    } catch {
      // closing is best effort; a driver with nowayout keeps counting, as its operator chose
    }
    this.fd = undefined;
    if (this.status.state === 'active') this.status = { ...this.status, state: 'idle', detail: `${this.device} present (timeout ${this.timeoutS ?? '?'} s); opened while primary` };
  }
}
