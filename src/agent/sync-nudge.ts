import type pg from 'pg';

/**
 * After synchronous_standby_names changed on a primary: once the new setting
 * is loaded, commit one tiny local transaction. Commits waiting for a standby
 * are released only when a standby's reply is processed under the new
 * setting; a standby that already holds their WAL replies only when new WAL
 * reaches it (or after wal_receiver_status_interval), and the waiting commits
 * produce none. This flushes a commit record (without waiting for any standby
 * itself), so each streaming standby replies at once.
 */
export async function nudgeStandbys(client: pg.Client, expected: string): Promise<void> {
  // The reload is asynchronous (SIGHUP): wait until a fresh look sees it (walsenders reload as promptly).
  for (let attempt = 0; attempt < 50; attempt++) {
    const ssn = await client.query<{ ssn: string }>(`SELECT current_setting('synchronous_standby_names') AS ssn`);
    if (ssn.rows[0]?.ssn === expected) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  await client.query(`BEGIN; SET LOCAL synchronous_commit = local; SELECT txid_current(); COMMIT`);
}
