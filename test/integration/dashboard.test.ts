/**
 * The web dashboard in a real browser (Debian's headless Chromium driven by
 * playwright-core) against a real 3-member cluster with an embedded router:
 * the topology, lag charts, routers and events render; pause needs the API's
 * credentials; a failover shows in the page within seconds. A screenshot is
 * saved under test-artifacts/ (RELEVO_TEST_ARTIFACTS overrides the folder).
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { TestCluster, FAULT_TEST_MEMBERS, FAULT_TEST_SETTINGS } from '../helpers/cluster.js';
import { freePorts } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

const NAMES = FAULT_TEST_MEMBERS;
const CHROMIUM = process.env.RELEVO_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = process.env.RELEVO_TEST_ARTIFACTS ?? fileURLToPath(new URL('../../../test-artifacts/', import.meta.url));
const API_USER = 'ops';
const API_PASSWORD = 'dashboard test password';

describe('web dashboard in headless Chromium', () => {
  let cluster: TestCluster;
  let browser: Browser;
  let page: Page;
  let primary: string;
  let viewer: string;

  before(async () => {
    cluster = await TestCluster.create({ store: 'embedded', settings: FAULT_TEST_SETTINGS });
    const passwordFile = join(cluster.dir, 'api-password');
    writeFileSync(passwordFile, API_PASSWORD, { mode: 0o600 });
    const [rw, ro] = await freePorts(2);
    for (const name of NAMES) {
      const router = name === 'node3' ? { router: { embedded: true, name: 'app-router', listen: { readWrite: `127.0.0.1:${rw}`, readOnly: `127.0.0.1:${ro}` }, publishIntervalMs: 1_000 } } : {};
      const [apiPort] = await freePorts(1);
      await cluster.defineMember(name, { ...router, api: { listen: `127.0.0.1:${apiPort}`, auth: { username: API_USER, password: { file: passwordFile } } } });
    }
    for (const name of NAMES) cluster.startAgent(name);
    const members = await cluster.waitHealthy(NAMES);
    primary = members.find((m) => m.role === 'primary')!.name;
    // Watch from a member that survives the failover, preferably the one running the router.
    viewer = primary === 'node3' ? 'node2' : 'node3';
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    // The API serves HTTPS with the cluster's own CA, which this browser profile does not hold;
    // certificate checks are tls.test.ts's job, this test is about the page.
    page = await browser.newPage({ viewport: { width: 1280, height: 900 }, ignoreHTTPSErrors: true });
  });
  after(async () => {
    await browser?.close().catch(() => undefined);
    await cluster?.destroy();
  });

  const url = () => `https://${cluster.member(viewer).config.api.listen}/`;

  it('draws the topology, lag, routers and events of the running cluster', async () => {
    await page.goto(url());
    await page.locator(`#topology g[data-member="${primary}"][data-state="primary"]`).waitFor({ timeout: 15_000 });
    assert.equal(await page.locator(`#topology g[data-member="${primary}"] [data-lease]`).count(), 1, 'the lease holder is marked');
    for (const replica of NAMES.filter((n) => n !== primary)) {
      await page.locator(`#topology [data-edge="${primary}->${replica}"]`).waitFor({ timeout: 15_000 });
      assert.equal(await page.locator(`#lag .lag-row[data-member="${replica}"]`).count(), 1);
    }
    await page.locator('#routers td', { hasText: 'app-router' }).first().waitFor({ timeout: 15_000 });
    await page.locator('#events li').first().waitFor({ timeout: 15_000 });
    const colour = await page.locator(`#topology g[data-member="${primary}"] rect`).first().getAttribute('stroke');
    assert.equal(colour, '#1f9d55', 'a healthy state in the colour of the healthy tone');
  });

  it('pause and resume need the API credentials', async () => {
    const anonymous = await cluster.api(viewer, '/pause', { method: 'POST' });
    assert.equal(anonymous.status, 401, 'the API refuses pause without credentials');
    await page.click('#pause');
    await page.locator('#op-result', { hasText: 'authentication required' }).waitFor({ timeout: 10_000 });
    await page.fill('#user', API_USER);
    await page.fill('#password', API_PASSWORD);
    await page.click('#pause');
    await page.locator('#summary .banner', { hasText: 'PAUSED' }).waitFor({ timeout: 15_000 });
    await page.click('#resume');
    await page.locator('#summary .banner', { hasText: 'PAUSED' }).waitFor({ state: 'detached', timeout: 15_000 });
  });

  it('a failover shows in the page within seconds of the new primary taking over', async () => {
    await cluster.signalAgent(primary, 'SIGKILL');
    const pid = cluster.postmasterPid(primary);
    if (pid) process.kill(pid, 'SIGKILL');
    const promoted = await waitFor('a new primary in the store', async () => (await cluster.memberStatuses()).find((m) => m.name !== primary && m.state === 'primary')?.name, 60_000, 100);
    const seenInStore = Date.now();
    // The page polls every second; 15 s leaves room for a loaded machine.
    await page.locator(`#topology g[data-member="${promoted}"][data-state="primary"] [data-lease]`).waitFor({ timeout: 15_000 });
    const delayMs = Date.now() - seenInStore;
    await page.locator(`#events li[data-member="${promoted}"][data-to="primary"]`).first().waitFor({ timeout: 15_000 });
    await page.locator('#history td', { hasText: promoted }).first().waitFor({ timeout: 15_000 });
    console.log(`dashboard showed the new primary ${promoted} ${delayMs} ms after the store did`);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-failover.png'), fullPage: true });
  });
});
