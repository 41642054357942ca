/**
 * Logging for the short-lived commands (`lockmig dump`, `inspect`, the restore shim) and the
 * kernel layers (engine, handover). Same JSON line shape as src/log/logger.ts (component,
 * fields, level, message, timestamp), written synchronously to stderr, without loading
 * winston: winston and its dependencies cost 70–90 ms of start-up here, more than a
 * 10,000-fd dump takes to read /proc. The long-running roles (controller, agent, webhook)
 * keep winston; its Logger satisfies the `Log` interface below, so the engine takes either.
 */

/** The logging calls the engine and the shim make. A winston Logger satisfies it. */
export interface Log {
  error(message: string, meta?: Record<string, unknown>): unknown;
  warn(message: string, meta?: Record<string, unknown>): unknown;
  info(message: string, meta?: Record<string, unknown>): unknown;
  debug(message: string, meta?: Record<string, unknown>): unknown;
}

const LEVELS = ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'] as const;

const bigintSafe = (_k: string, v: unknown): unknown => (typeof v === 'bigint' ? v.toString() : v);

/**
 * JSON lines on stderr, honouring LOCKMIG_LOG_LEVEL (error|warn|info|debug…, default info).
 * `fields` are added to every line (like a winston child logger's metadata).
 */
export function jsonLogger(
  component: string,
  level: string = process.env.LOCKMIG_LOG_LEVEL ?? 'info',
  fields: Record<string, unknown> = {},
  write: (line: string) => void = (line) => { process.stderr.write(line); },
): Log {
  const at = LEVELS.indexOf(level as (typeof LEVELS)[number]);
  const max = at >= 0 ? at : 2;
  const emit = (lvl: (typeof LEVELS)[number]) => {
    if (LEVELS.indexOf(lvl) > max) return () => undefined;
    return (message: string, meta: Record<string, unknown> = {}): void => {
      write(`${JSON.stringify({ component, ...fields, ...meta, level: lvl, message, timestamp: new Date().toISOString() }, bigintSafe)}\n`);
    };
  };
  return { error: emit('error'), warn: emit('warn'), info: emit('info'), debug: emit('debug') };
}

/** Drops everything: the default when a library caller passes no logger. */
export const quietLog: Log = { error: () => undefined, warn: () => undefined, info: () => undefined, debug: () => undefined };
