#!/usr/bin/env node
/**
 * lockmig — one CLI, one subcommand per role. Each subcommand lives in
 * src/cli/commands/<name>.ts and exports `run(argv): Promise<number>` (the exit code)
 * and `summary` (one line for `lockmig help`). This file only dispatches.
 */
import { COMMANDS } from './commands/index.js';
import { CliError } from './args.js';

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write('usage: lockmig <command> [options]\n\ncommands:\n');
    for (const [cmd, mod] of Object.entries(COMMANDS)) process.stdout.write(`  ${cmd.padEnd(11)} ${mod.summary}\n`);
    process.stdout.write('\nRun `lockmig <command> --help` for a command\'s options.\n');
    return name ? 0 : 2;
  }
  const load = COMMANDS[name];
  if (!load) {
    process.stderr.write(`lockmig: unknown command "${name}" (try "lockmig help")\n`);
    return 2;
  }
  const mod = await load.load();
  return mod.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    if (err instanceof CliError) {
      process.stderr.write(`lockmig: ${err.message}\n`);
      process.exitCode = err.exitCode;
    } else {
      process.stderr.write(`lockmig: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
