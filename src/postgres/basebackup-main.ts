/**
 * Child process of a clone by relevo's own base backup (clone.ts): runs as
 * the PostgreSQL OS user, so the data directory is written with that user's
 * rights only. Reads its job as one JSON object on stdin (the replication
 * password travels there, never in argv or the environment), prints the
 * result as JSON on stdout, errors on stderr with exit status 1.
 */
import { readFileSync } from 'node:fs';
import { takeBaseBackup } from './basebackup.js';

export interface BaseBackupJob {
  host: string;
  port: number;
  user: string;
  password: string;
  applicationName: string;
  caFile?: string;
  dataDir: string;
  label: string;
  fastCheckpoint: boolean;
  showProgress: boolean;
}

async function main(): Promise<void> {
  const job = JSON.parse(readFileSync(0, 'utf8')) as BaseBackupJob;
  const mb = (n: number) => `${(n / 1048576).toFixed(0)} MB`;
  const result = await takeBaseBackup(
    {
      host: job.host,
      port: job.port,
      user: job.user,
      password: job.password,
      applicationName: job.applicationName,
      ...(job.caFile ? { caPem: readFileSync(job.caFile, 'utf8') } : {}),
    },
    {
      dataDir: job.dataDir,
      label: job.label,
      fastCheckpoint: job.fastCheckpoint,
      ...(job.showProgress ? { onProgress: (done: number, total: number) => process.stderr.write(`${mb(done)} / ${mb(total)}\r`) } : {}),
    },
  );
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (error: Error & { code?: string }) => {
    process.stderr.write(`${error.code ? `${error.code}: ` : ''}${error.message}\n`);
    process.exit(1);
  },
);
