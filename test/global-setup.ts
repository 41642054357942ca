import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Tests spawn the real CLI (`node dist/src/cli/main.js …`), so compile once before any
 * test file runs. Type errors are printed but do not stop emission here; `npm test`
 * runs a strict `tsc` first, so CI still fails on them.
 */
export default function setup(): void {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const r = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], {
    cwd: root, encoding: 'utf8',
  });
  if (r.status !== 0) process.stderr.write(`\n[global-setup] tsc reported errors (output still emitted):\n${r.stdout}${r.stderr}\n`);
}
