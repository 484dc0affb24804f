import { commandLine } from './proc.js';

/**
 * Guards against pid reuse before the agent signals a fencer it did not
 * just start: the process must be relevo's fencer, for this data directory
 * (started by an agent: `fence/main.js --data-dir D`) or any `relevo fence`
 * (an external unit, whose status file names the data directory).
 */
export function isFencerCommand(args: string[], dataDir: string): boolean {
  const entry = args.some((a) => a.endsWith('/fence/main.js'));
  if (entry) return args.includes(dataDir);
  return args.some((a) => a.endsWith('relevo') || a.endsWith('/cli/main.js')) && args.includes('fence');
}

export function isFencerProcess(pid: number, dataDir: string): boolean {
  return isFencerCommand(commandLine(pid), dataDir);
}
