/**
 * relevo's router as its own process (`relevo router -c <member file>`, the
 * file's `router:` section), optionally on a simulated host (a launcher such
 * as NetworkLab.wrap). stop() ends it by PID; an exit hook kills what is left.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import type { RouterStatus } from '../../src/router/status.js';
import { MAIN } from './cluster.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const routerPids = new Set<number>();
process.on('exit', () => {
  for (const pid of routerPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
});

export class RouterProcess {
  private constructor(
    readonly child: ChildProcess,
    readonly logFile: string,
    readonly metrics: string,
  ) {}

  static start(configFile: string, logFile: string, metrics: string, launcher?: (argv: string[]) => string[]): RouterProcess {
    const log = openSync(logFile, 'a');
    const argv = [process.execPath, MAIN, 'router', '-c', configFile];
    const [program, ...args] = launcher ? launcher(argv) : argv;
    const child = spawn(program!, args, { stdio: ['ignore', log, log] });
    const pid = child.pid;
    if (pid === undefined) throw new Error('relevo router did not start');
    routerPids.add(pid);
    child.once('exit', () => routerPids.delete(pid));
    return new RouterProcess(child, logFile, metrics);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async stats(): Promise<RouterStatus> {
    const response = await fetch(`http://${this.metrics}/stats`, { signal: AbortSignal.timeout(2_000) });
    if (!response.ok) throw new Error(`GET /stats: ${response.status}`);
    return (await response.json()) as RouterStatus;
  }

  async listener(role: 'rw' | 'ro') {
    const found = (await this.stats()).listeners.find((l) => l.role === role);
    if (!found) throw new Error(`router has no ${role} listener`);
    return found;
  }

  /** The router's JSON log lines (pino), parsed; non-JSON lines are skipped. */
  log(): Array<{ time: string; msg: string; [key: string]: unknown }> {
    let text = '';
    try {
      text = readFileSync(this.logFile, 'utf8');
    } catch {
      return [];
    }
    const out = [];
    for (const line of text.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line));
      } catch {
        // a torn last line
      }
    }
    return out;
  }

  tail(lines = 30): string {
    try {
      return readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no router log)';
    }
  }

  /** SIGTERM (the router closes its sessions and unpublishes), SIGKILL if it is not gone in 10 s. */
  async stop(): Promise<void> {
    if (!this.running) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000)]);
    if (this.running) {
      this.child.kill('SIGKILL');
      await exited;
    }
  }
}
