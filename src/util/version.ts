import { readFileSync } from 'node:fs';

/** relevo's version, from package.json (dist/src/util/ and src/util/ both sit three or two levels below it). */
export const RELEVO_VERSION: string = (() => {
  for (const path of ['../../../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'relevo' && pkg.version) return pkg.version;
    } catch {
      // try the next location
    }
  }
  return 'unknown';
})();
