/** Public surface of the router, for the CLI (`relevo router`) and agents that embed one. */
export { startRouter, type RouterHandle } from './router.js';
export { RouterSettingsSchema, type RouterOptions, type RouterSettings, type RouterSettingsInput, type RouterLogger } from './options.js';
export { RouterStatusSchema, ListenerStatsSchema, type RouterStatus, type ListenerStats } from './status.js';
export { refusals, closures, type RefusalCode, type ClosureCode } from './errors.js';
