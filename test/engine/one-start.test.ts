/**
 * The restore shim starts Node.js once even when the recorded fd numbers are the runtime's own
 * (3–6 here: Node.js holds 3–17 before any JavaScript runs): with liblockmig the descriptions are
 * moved into place at exec time on a private fd table. Without it (LOCKMIG_NO_NATIVE=1) the shim
 * re-executes itself once and says so in its log. Both end the same way: the program holds every
 * lock on the recorded numbers (fdinfo of the exec'd process) and nothing else of Node's leaks.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { missing, runCli, CLI } from '../helpers/env.js';
import { startHolder, tmpDir } from '../handover/helpers.js';
import { nativeLib } from '../../src/sys/index.js';

const skip = missing({ root: true, tools: ['unshare', 'python3'] }, 'one Node.js start');
if (!skip && nativeLib() === null) {
  process.stderr.write('\n!!!!!!!! SKIPPING "one Node.js start": liblockmig is not built — these tests did NOT run !!!!!!!!\n');
  if (process.env.CI) throw new Error('CI must build liblockmig');
}

describe.skipIf(skip || nativeLib() === null)('restore shim start-up with recorded fds 3–6', () => {
  it('starts Node.js once with liblockmig, twice (and says why) without; the program holds the locks either way', async () => {
    const dir = tmpDir('one-start');
    const files = ['a', 'b', 'c', 'd'].map((n) => path.join(dir, n));
    for (const f of files) fs.writeFileSync(f, 'x'.repeat(64));
    const h = await startHolder([
      { path: files[0]!, fd: 3, kind: 'OFD', type: 'WRITE', start: 0, len: 0 },
      { path: files[1]!, fd: 4, kind: 'POSIX', type: 'WRITE', start: 0, len: 10 },
      { path: files[2]!, fd: 5, kind: 'FLOCK', type: 'WRITE', start: 0, len: 0 },
      { path: files[3]!, fd: 6, kind: 'POSIX', type: 'READ', start: 0, len: 0 },
    ]);
    const img = path.join(dir, 'img');
    try {
      const d = runCli(['dump', '--pid', String(h.pid), '--out', img]);
      expect(d.status, d.stderr).toBe(0);
    } finally {
      h.kill();
      await h.exited();
    }
    const probe = 'for f in 3 4 5 6; do grep "^lock:" /proc/$$/fdinfo/$f | sed "s/^lock:[[:space:]]*[0-9]*: //; s/ [0-9a-f]*:[0-9a-f]*:[0-9]* / /; s/ $$ / PID /"; done; ls /proc/$$/fd | sort -n | tr "\\n" " "';
    const run = (env: Record<string, string>) => spawnSync(process.execPath, [CLI, 'restore', '--image', img, '--allow', dir, '--timeout', '5', '--', 'sh', '-c', probe], {
      encoding: 'utf8', env: { ...process.env, LOCKMIG_LOG_LEVEL: 'debug', ...env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const one = run({});
      expect(one.status, one.stderr).toBe(0);
      expect(one.stderr).toContain('placing them at exec time on a private fd table (one start)');
      expect(one.stderr).not.toContain('re-executing');
      const two = run({ LOCKMIG_NO_NATIVE: '1' });
      expect(two.status, two.stderr).toBe(0);
      expect(two.stderr).toContain('re-executing once with placeholders');
      expect(two.stderr).toContain('liblockmig is not available');
      for (const r of [one, two]) {
        const lines = r.stdout.trim().split('\n');
        expect(lines.slice(0, 4)).toEqual([
          'OFDLCK ADVISORY  WRITE -1 0 EOF', 'POSIX  ADVISORY  WRITE PID 0 9', 'FLOCK  ADVISORY  WRITE PID 0 EOF', 'POSIX  ADVISORY  READ PID 0 EOF',
        ]);
        // stdio, the four restored fds, and whatever the test runner itself passes down; no Node.js fd
        const fdList = lines[4]!.trim().split(' ').map(Number);
        for (const n of [3, 4, 5, 6]) expect(fdList).toContain(n);
        for (const n of fdList.filter((x) => x > 6)) {
          expect(fs.existsSync(`/proc/self/fd/${n}`), `fd ${n} of the program is not one the test runner has`).toBe(true);
        }
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
