/**
 * `relevo init`: writes what a new host needs — its member file, the cluster's
 * role passwords and the cluster CA — from flags, asking nothing. The first
 * host of a cluster generates the passwords and the CA; every other host takes
 * them from the first one's directory (--from). It never overwrites a file:
 * a half-configured host is fixed by hand, not silently replaced.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { stringify as stringifyYaml } from 'yaml';
import { parseMemberConfig, ConfigError } from '../config/load.js';
import { generatePassword, writePrivateFile } from '../config/secrets.js';
import { generateKeyPem, issueCaCert } from '../tls/pki.js';
import { CliError } from './context.js';

export interface InitOptions {
  cluster: string;
  name: string;
  /** Where the member file, secrets.yaml and ca/ go (default /etc/relevo). */
  dir: string;
  dataDir?: string;
  binDir?: string;
  listen: string;
  port: number;
  connectAddress?: string;
  apiListen?: string;
  /** etcd endpoints (URLs), or an embedded store path. */
  etcd?: string[];
  embedded?: string;
  /** The first host's init directory: its secrets.yaml and ca/ are copied instead of generating new ones. */
  from?: string;
  tls: boolean;
}

export interface InitResult {
  memberFile: string;
  secretsFile: string;
  caDir: string | undefined;
  generated: boolean;
}

/** The member file's content, checked against the schema before anything is written. */
export function initMemberConfig(options: InitOptions): Record<string, unknown> {
  if (!options.etcd === !options.embedded) throw new CliError('BAD_ARGUMENT', 'give the store: --etcd URL[,URL...] (several hosts) or --embedded PATH (one host, tests and demos)');
  const dir = resolve(options.dir);
  const config = {
    cluster: options.cluster,
    name: options.name,
    store: options.etcd ? { backend: 'etcd', endpoints: options.etcd } : { backend: 'embedded', path: resolve(options.embedded!) },
    postgres: {
      dataDir: options.dataDir ?? `/var/lib/postgresql/15/${options.cluster}`,
      ...(options.binDir ? { binDir: options.binDir } : {}),
      listen: options.listen,
      port: options.port,
      ...(options.connectAddress ? { connectAddress: options.connectAddress } : {}),
    },
    api: { listen: options.apiListen ?? `${options.listen}:8008` },
    secrets: { file: join(dir, 'secrets.yaml') },
    tls: { enabled: options.tls },
  };
  try {
    parseMemberConfig(stringifyYaml(config), join(dir, 'member.yaml'));
  } catch (error) {
    if (error instanceof ConfigError) throw new CliError('CONFIG_INVALID', `the flags give an invalid member file, nothing written:\n${error.problems.map((p) => `  - ${p}`).join('\n')}`);
    throw error;
  }
  return config;
}

export async function runInit(options: InitOptions): Promise<InitResult> {
  const config = initMemberConfig(options);
  const dir = resolve(options.dir);
  const memberFile = join(dir, 'member.yaml');
  const secretsFile = join(dir, 'secrets.yaml');
  const caDir = options.tls ? join(dir, 'ca') : undefined;
  const targets = [memberFile, secretsFile, ...(caDir ? [caDir] : [])];
  const existing = targets.filter((path) => existsSync(path));
  if (existing.length > 0) throw new CliError('INIT_EXISTS', `${existing.join(', ')} already exist${existing.length === 1 ? 's' : ''}: relevo init never overwrites; nothing written`);
  if (options.from !== undefined) {
    const from = resolve(options.from);
    const needed = [join(from, 'secrets.yaml'), ...(caDir ? [join(from, 'ca', 'ca.crt')] : [])];
    const absent = needed.filter((path) => !existsSync(path));
    if (absent.length > 0) throw new CliError('BAD_ARGUMENT', `--from ${from}: ${absent.join(', ')} missing; copy the first host's init directory (secrets.yaml and ca/) here first`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const written: string[] = [];
  try {
    if (options.from !== undefined) {
      const from = resolve(options.from);
      writePrivateFile(secretsFile, readFileSync(join(from, 'secrets.yaml'), 'utf8'));
      written.push(secretsFile);
      if (caDir) {
        mkdirSync(caDir, { mode: 0o700 });
        written.push(caDir);
        cpSync(join(from, 'ca', 'ca.crt'), join(caDir, 'ca.crt'));
        // Without ca.key this host's agent cannot issue its own certificate (tls.cert/tls.key then).
        if (existsSync(join(from, 'ca', 'ca.key'))) writePrivateFile(join(caDir, 'ca.key'), readFileSync(join(from, 'ca', 'ca.key'), 'utf8'));
      }
    } else {
      writePrivateFile(
        secretsFile,
        `# relevo role passwords for cluster ${options.cluster}; keep this file mode 0600 and the same on every host\n${stringifyYaml({ replicationPassword: generatePassword(), agentPassword: generatePassword() })}`,
      );
      written.push(secretsFile);
      if (caDir) {
        mkdirSync(caDir, { mode: 0o700 });
        written.push(caDir);
        const keyFile = join(caDir, 'ca.key');
        writePrivateFile(keyFile, generateKeyPem());
        writePrivateFile(join(caDir, 'ca.crt'), await issueCaCert(keyFile, options.cluster), 0o644);
      }
    }
    writePrivateFile(memberFile, `# relevo member file written by relevo init (docs/configuration.md)\n${stringifyYaml(config)}`);
    written.push(memberFile);
  } catch (error) {
    // All or nothing: a failed init leaves no partial configuration behind.
    for (const path of written.reverse()) rmSync(path, { recursive: true, force: true });
    throw error;
  }
  return { memberFile, secretsFile, caDir, generated: options.from === undefined };
}

export function describeInit(result: InitResult, options: InitOptions): string {
  const lines = [`wrote ${result.memberFile}`, `wrote ${result.secretsFile}${result.generated ? ' (new role passwords)' : ` (from ${options.from})`}`];
  if (result.caDir) lines.push(`wrote ${result.caDir}/ca.crt${result.generated ? ' and ca.key (a new cluster CA)' : ` (from ${options.from})`}`);
  lines.push('', 'next:');
  if (result.generated) lines.push(`  - on every other host: copy ${dirname(result.secretsFile)}/secrets.yaml${result.caDir ? ' and ca/' : ''} there, then run relevo init --from <that directory> with its own --name`);
  lines.push(`  - check it: relevo config check ${result.memberFile}; start it: relevo agent -c ${result.memberFile}`);
  lines.push('  - as a service: deploy/systemd/relevo-agent.service (docs/deployment.md)');
  return lines.join('\n');
}
