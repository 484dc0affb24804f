import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { spawnIdentity, type OsUser } from '../util/os-user.js';

/** A PostgreSQL program failed: names the program, the member and the end of its output. */
export class PostgresCommandError extends Error {
  readonly code = 'POSTGRES_COMMAND_FAILED';
  constructor(
    readonly program: string,
    readonly exitCode: number | null,
    readonly output: string,
    context: string,
  ) {
    super(`${program} failed (${context}, exit ${exitCode ?? 'signal'}): ${output.trim().split('\n').slice(-6).join(' | ')}`);
    this.name = 'PostgresCommandError';
  }
}

export interface RunOptions {
  /** Extra environment (e.g. PGPASSFILE); passwords are never passed in argv. */
  env?: Record<string, string>;
  stdin?: string;
  /** Inherit stderr (e.g. pg_basebackup progress on a terminal). */
  showProgress?: boolean;
  /** Start the child in its own session so it outlives the agent (pg_ctl start). */
  detached?: boolean;
  timeoutMs?: number;
  context: string;
}

/** Runs one PostgreSQL program from binDir as the configured OS user. */
export function runPostgresProgram(
  binDir: string,
  user: OsUser,
  program: string,
  args: string[],
  options: RunOptions,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(join(binDir, program), args, {
      ...spawnIdentity(user),
      cwd: '/',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', HOME: user.home, ...options.env },
      stdio: [options.stdin === undefined ? 'ignore' : 'pipe', 'pipe', options.showProgress ? 'inherit' : 'pipe'],
      detached: options.detached ?? false,
    });
    let output = '';
    const collect = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.length > 64_000) output = output.slice(-32_000);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
    child.on('error', (error) => {
      if (timer) clearTimeout(timer);
      reject(new PostgresCommandError(program, null, error.message, options.context));
    });
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      if (code === 0) resolve(output);
      else reject(new PostgresCommandError(program, code, output, options.context));
    });
    if (child.stdin) {
      // A program that exits without reading its input must not crash the agent with EPIPE.
      child.stdin.on('error', () => undefined);
      child.stdin.end(options.stdin);
    }
  });
}
