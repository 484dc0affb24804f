import { pino, type Logger } from 'pino';

/**
 * JSON logs on stdout. Keys that could carry a secret are redacted as a last
 * line of defence; code never logs credentials on purpose.
 */
export function createLogger(level: string, bindings: Record<string, string>): Logger {
  return pino({
    level,
    base: { pid: process.pid, ...bindings },
    redact: { paths: ['password', '*.password', 'credentials', '*.credentials', 'replicationPassword', 'agentPassword'], censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}
