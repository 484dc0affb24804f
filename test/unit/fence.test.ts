import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FEED_VERSION, heartbeatStale, tickMs, verdict, type Feed } from '../../src/fence/deadline.js';
import { isFencerCommand } from '../../src/fence/identity.js';
import { descendants, parseStat, type ProcEntry } from '../../src/fence/proc.js';
import { mayKeepAlive, sysfsTimeoutPath, timeoutProblem } from '../../src/fence/watchdog.js';

const feed = (over: Partial<Feed> = {}): Feed => ({
  version: FEED_VERSION,
  member: 'node1',
  agentPid: 42,
  armed: true,
  deadlineMs: 10_000,
  writtenMs: 6_000,
  ttlMs: 6_000,
  fenceMarginMs: 2_000,
  reason: 'running as primary',
  ...over,
});

describe('fence deadline', () => {
  it('never fences without a feed, or when the agent disarmed it', () => {
    assert.equal(verdict(undefined, 1e9).kind, 'idle');
    assert.equal(verdict(feed({ armed: false }), 1e9).kind, 'idle');
  });
  it('is armed before the deadline and fences at and after it', () => {
    assert.deepEqual(verdict(feed(), 9_999), { kind: 'armed', remainingMs: 1 });
    const at = verdict(feed(), 10_000);
    assert.equal(at.kind, 'fence');
    const late = verdict(feed(), 10_500);
    assert.ok(late.kind === 'fence' && late.overdueMs === 500 && /not fed for 4500 ms/.test(late.reason) && /4000 ms/.test(late.reason));
  });
  it('a renewal moves the deadline: a healthy primary is never fenced', () => {
    assert.equal(verdict(feed({ deadlineMs: 14_000, writtenMs: 10_000 }), 10_500).kind, 'armed');
  });
  it('looks a tenth of the margin apart, between 20 and 100 ms', () => {
    assert.equal(tickMs(feed()), 100);
    assert.equal(tickMs(feed({ fenceMarginMs: 500 })), 50);
    assert.equal(tickMs(feed({ fenceMarginMs: 100 })), 20);
    assert.equal(tickMs(undefined), 100);
  });

  it('looks at most once a second while unarmed, and soon enough to see an arming long before its deadline', () => {
    assert.equal(tickMs(feed({ armed: false })), 1_000);
    // ttlMs 3 s, margin 1 s: the first deadline comes 2 s after arming; seen within 500 ms.
    assert.equal(tickMs(feed({ armed: false, ttlMs: 3_000, fenceMarginMs: 1_000 })), 500);
    assert.equal(tickMs(feed({ armed: false, ttlMs: 1_000, fenceMarginMs: 900 })), 90);
    assert.equal(tickMs(undefined), 100);
  });
  it('a fencer heartbeat older than the limit is stale', () => {
    assert.equal(heartbeatStale(undefined, 0, 5_000), true);
    assert.equal(heartbeatStale(1_000, 6_000, 5_000), false);
    assert.equal(heartbeatStale(1_000, 6_001, 5_000), true);
  });
});

describe('/proc parsing', () => {
  it('reads pid, ppid, state and start time after the last parenthesis of the command name', () => {
    const line = '4242 (postgres: relevo postgres 127.0.0.1(5432) idle) S 4100 4100 4100 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615';
    assert.deepEqual(parseStat(line), { pid: 4242, ppid: 4100, state: 'S', startTime: 987654 });
    assert.equal(parseStat('garbage'), undefined);
    assert.equal(parseStat(''), undefined);
  });
  it('finds every descendant of the postmaster, root first, and nothing else', () => {
    const p = (pid: number, ppid: number, state = 'S'): ProcEntry => ({ pid, ppid, state, startTime: 1 });
    const table = [p(1, 0), p(100, 1, 'T'), p(101, 100), p(102, 100), p(103, 102), p(200, 1), p(201, 200), p(104, 100)];
    assert.deepEqual(descendants(100, table).map((e) => e.pid), [100, 101, 102, 104, 103]);
    assert.deepEqual(descendants(999, table), []);
    // A cycle in a racy read never loops.
    assert.deepEqual(descendants(5, [p(5, 6), p(6, 5)]).map((e) => e.pid), [5, 6]);
  });
});

describe('fencer identity', () => {
  it('recognises a fencer started by an agent for this data directory, or relevo fence', () => {
    assert.equal(isFencerCommand(['node', '/opt/relevo/dist/src/fence/main.js', '--data-dir', '/d/n1'], '/d/n1'), true);
    assert.equal(isFencerCommand(['node', '/opt/relevo/dist/src/fence/main.js', '--data-dir', '/d/n2'], '/d/n1'), false);
    assert.equal(isFencerCommand(['node', '/usr/bin/relevo', 'fence', '-c', '/etc/relevo/member.yaml'], '/d/n1'), true);
    assert.equal(isFencerCommand(['node', '/usr/bin/relevo', 'agent'], '/d/n1'), false);
    assert.equal(isFencerCommand(['sleep', '100'], '/d/n1'), false);
  });
});

describe('watchdog', () => {
  it('maps the device to its sysfs timeout', () => {
    assert.equal(sysfsTimeoutPath('/dev/watchdog'), '/sys/class/watchdog/watchdog0/timeout');
    assert.equal(sysfsTimeoutPath('/dev/watchdog1'), '/sys/class/watchdog/watchdog1/timeout');
  });
  it('refuses a device that would fire after the lease could expire', () => {
    assert.equal(timeoutProblem(4, 6_000, 2_000), undefined);
    assert.match(timeoutProblem(60, 6_000, 2_000)!, /60 s exceeds .* 4000 ms .*soft_margin=4/);
    assert.match(timeoutProblem(undefined, 6_000, 2_000)!, /cannot be read/);
  });
  it('keeps the device alive only while its timeout still ends before the lease could', () => {
    // renewal at 0: deadline 4000, lease 6000; a 4 s timeout may be fed until 2000.
    assert.equal(mayKeepAlive(2_000, 4_000, 2_000, 4), true);
    assert.equal(mayKeepAlive(2_001, 4_000, 2_000, 4), false);
  });
});

describe('freezeAndKillTree', () => {
  it('stops then kills a real process tree, a stopped root included; nothing outside it', async () => {
    const { spawn } = await import('node:child_process');
    const { freezeAndKillTree } = await import('../../src/fence/kill.js');
    const { readProcTable } = await import('../../src/fence/proc.js');
    const root = spawn('sh', ['-c', 'sleep 60 & sleep 60 & wait'], { stdio: 'ignore' });
    const bystander = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      const tree = descendants(root.pid!, readProcTable()).map((e) => e.pid);
      assert.equal(tree.length, 3);
      process.kill(root.pid!, 'SIGSTOP');
      const exited = new Promise((resolve) => root.once('exit', resolve));
      const result = freezeAndKillTree(root.pid!);
      assert.deepEqual(result.errors, []);
      assert.deepEqual([...result.pids].sort(), [...tree].sort());
      await exited;
      await new Promise((resolve) => setTimeout(resolve, 100));
      const left = readProcTable().filter((e) => tree.includes(e.pid) && e.state !== 'Z');
      assert.deepEqual(left, []);
      assert.equal(bystander.exitCode, null, 'a process outside the tree is left alone');
    } finally {
      for (const child of [root, bystander]) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});

describe('relevo list: Fencing section', () => {
  it('says plainly when a fencer is missing or no watchdog device backs it', async () => {
    const { renderFencing } = await import('../../src/cli/list.js');
    const { member } = await import('./observations.js');
    const text = renderFencing([
      member('a', { fence: { fencer: 'running', pid: 7, state: 'armed', fences: 0, watchdog: 'unavailable', detail: 'E_WATCHDOG_UNAVAILABLE: no /dev/watchdog on this host' } }),
      member('b', { fence: { fencer: 'missing', pid: null, state: 'unknown', fences: 0, watchdog: 'unknown', detail: 'E_FENCER_MISSING: no fencer status' } }),
      member('c'),
    ]);
    assert.match(text, /a: fencer running \(pid 7, armed\); watchdog unavailable — E_WATCHDOG_UNAVAILABLE/);
    assert.match(text, /b: FENCER MISSING: takes no leader lease; watchdog unknown — E_FENCER_MISSING/);
    assert.doesNotMatch(text, /\n {2}c:/);
  });
});

describe('feeding the fencer', () => {
  it('rewrites an unarmed feed only when more than its times changed; an armed one at every renewal', async () => {
    const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const pino = (await import('pino')).default;
    const { FencerLink } = await import('../../src/fence/link.js');
    const dir = mkdtempSync(join(tmpdir(), 'relevo-feed-'));
    try {
      const link = new FencerLink({ name: 'node1' } as never, join(dir, 'data'), pino({ level: 'silent' }));
      const written = () => JSON.parse(readFileSync(link.files.feed, 'utf8')) as Feed;
      const input = { armed: false, deadline: 1_000, ttlMs: 6_000, fenceMarginMs: 2_000, reason: 'not running as primary' };
      link.feed(input);
      const first = written();
      link.feed({ ...input, deadline: 2_000 });
      assert.deepEqual(written(), first, 'a replica renewing its lease leaves the file alone');
      link.feed({ ...input, deadline: 3_000, reason: 'cluster paused' });
      assert.equal(written().reason, 'cluster paused');
      link.feed({ ...input, armed: true, deadline: 4_000 });
      const armed = written();
      assert.equal(armed.armed, true);
      link.feed({ ...input, armed: true, deadline: 5_000 });
      assert.equal(Math.round(written().deadlineMs - armed.deadlineMs), 1_000, 'every renewal of an armed feed moves the deadline on disk');
      link.feed({ ...input, deadline: 6_000 });
      assert.equal(written().armed, false, 'disarming is written even when the unarmed content is as before');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
