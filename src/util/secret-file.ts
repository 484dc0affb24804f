import { statSync } from 'node:fs';

/**
 * The one rule for every file that holds a secret (role passwords, the API
 * password, the etcd password): no permission bit for group or others, i.e.
 * mode 0600 or stricter. Returns what is wrong, 'missing', or undefined when
 * the file is fine. `what` names the setting, never the content.
 */
export function secretFileProblem(file: string, what: string): string | 'missing' | undefined {
  let mode: number;
  try {
    const stats = statSync(file);
    if (!stats.isFile()) return `${what}: ${file} is not a regular file`;
    mode = stats.mode;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'missing' : `${what}: cannot read ${file} (${code ?? 'error'})`;
  }
  if ((mode & 0o077) !== 0) {
    return `${what}: ${file} is accessible by group or others (mode ${(mode & 0o777).toString(8)}); run chmod 600 ${file}`;
  }
  return undefined;
}
