#!/usr/bin/env node
/**
 * kubectl-lockmig: the kubectl plugin's executable (`kubectl lockmig …` finds it on PATH).
 * The commands are in src/cli/plugin/main.ts; this file only runs them and maps errors to exit codes.
 */
import { CliError } from './args.js';
import { runPlugin } from './plugin/main.js';

runPlugin(process.argv.slice(2), { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s) }).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    if (err instanceof CliError) {
      process.stderr.write(`error: ${err.message}\n`);
      process.exitCode = err.exitCode;
    } else {
      process.stderr.write(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
