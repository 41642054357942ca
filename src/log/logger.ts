/**
 * Structured JSON logging (winston). Every component gets a child logger carrying
 * `component` plus whatever identity fields apply (controller, namespace, name, node…).
 * Logs go to stderr so stdout stays free for command output (tables, JSON).
 */
import winston from 'winston';

export type Logger = winston.Logger;

export function createLogger(component: string, level = process.env.LOCKMIG_LOG_LEVEL ?? 'info'): Logger {
  return winston.createLogger({
    level,
    defaultMeta: { component },
    format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: false }), winston.format.json()),
    transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'] })],
  });
}

/** A logger that drops everything: for library callers and tests that pass no logger. */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console({ silent: true })] });
}
