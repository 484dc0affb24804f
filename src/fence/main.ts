/**
 * Entry point of a fencer started by an agent: small on purpose (no store,
 * no HTTP, no PostgreSQL client), so it starts fast and little can hang it.
 *   node dist/src/fence/main.js --member NAME --data-dir DIR [--watchdog off|auto|required] [--watchdog-device PATH] [--exit-when-orphaned]
 */
import { parseArgs } from 'node:util';
import { createLogger } from '../util/log.js';
import { WATCHDOG_MODES, type WatchdogMode } from './files.js';
import { runFencer } from './fencer.js';

const { values } = parseArgs({
  options: {
    member: { type: 'string' },
    'data-dir': { type: 'string' },
    watchdog: { type: 'string', default: 'off' },
    'watchdog-device': { type: 'string', default: '/dev/watchdog' },
    'exit-when-orphaned': { type: 'boolean', default: false },
    'log-level': { type: 'string', default: 'info' },
  },
});
const member = values.member;
const dataDir = values['data-dir'];
const watchdog = values.watchdog as WatchdogMode;
if (!member || !dataDir || !WATCHDOG_MODES.includes(watchdog)) {
  process.stderr.write('usage: fence/main.js --member NAME --data-dir DIR [--watchdog off|auto|required] [--watchdog-device PATH] [--exit-when-orphaned]\n');
  process.exit(2);
}
const log = createLogger(values['log-level']!, { member, component: 'fencer' });
await runFencer({ member, dataDir: dataDir.replace(/\/+$/, ''), watchdog, watchdogDevice: values['watchdog-device']!, exitWhenOrphaned: values['exit-when-orphaned']!, log });
process.exit(0);
