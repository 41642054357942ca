/**
 * Small argument parser shared by the subcommands (node:util parseArgs underneath),
 * with errors that carry an exit code. Everything after `--` is returned as `rest`.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** Exit codes used across the CLI. */
export const EXIT = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  /** a lock could not be taken before the timeout */
  LOCK_TIMEOUT: 3,
  /** a path outside the allowed prefixes, or an image that fails validation */
  REFUSED: 4,
  /** the image is corrupt, truncated or not a lockmig image */
  BAD_IMAGE: 5,
  NOT_ROOT: 77,
} as const;

export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number = EXIT.USAGE) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

export type Options = NonNullable<ParseArgsConfig['options']>;

export function parse<T extends Options>(argv: readonly string[], options: T, usage: string) {
  const dd = argv.indexOf('--');
  const own = dd >= 0 ? argv.slice(0, dd) : [...argv];
  const rest = dd >= 0 ? argv.slice(dd + 1) : [];
  if (own.includes('--help') || own.includes('-h')) {
    process.stdout.write(usage.endsWith('\n') ? usage : `${usage}\n`);
    return null;
  }
  try {
    const r = parseArgs({ args: own, options, allowPositionals: true, strict: true });
    return { values: r.values, positionals: r.positionals, rest };
  } catch (err) {
    throw new CliError(`${(err as Error).message}\n${usage}`);
  }
}
