/**
 * Restore benchmark. Checkpoints are made from real processes (python3, not lockmig code) that
 * are then killed: one holding 10,000 open files with 2,000 locks (OFD, POSIX and flock, read and
 * write; 200 dups), and one holding 4 locks on fds 3–6 (numbers Node.js itself uses).
 *
 *  - in-process: restoreLocks() recreates the 2,000 locked descriptions (plus 200 dups) at their
 *    fd numbers and re-takes every lock; target < 200 ms. Baseline, same run: the bare syscalls
 *    any restore must make (open each recorded path and take its lock through koffi).
 *  - `lockmig restore --image … -- true`, spawn → exit, for 4 and for 2,000 locks, two ways:
 *    `node dist/src/cli/main.js` and the self-contained shim bundle as restore pods start it
 *    (its loader, its Node.js, src/bundle/command.ts). Baselines, same run: `node -e 0` with the
 *    same Node.js and the same loader. Goals (issue 10): ≤ base + 100 ms for 4 locks, ≤ base +
 *    150 ms for 2,000; one Node.js start (each run's log is checked for a re-exec).
 *
 * Medians of LOCKMIG_BENCH_ROUNDS (default 7) rounds after a warm-up, all kinds interleaved.
 * Run alone: node dist/bench/restore.js (root; prints JSON). bench/run.ts calls benchRestore().
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dumpProcesses } from '../src/engine/dump.js';
import { restoreLocks } from '../src/engine/restore.js';
import { writeCheckpoint, type Checkpoint } from '../src/image/index.js';
import { buildShimBundle } from '../src/bundle/build.js';
import { shimCommand, shimNodeCommand } from '../src/bundle/command.js';
import { extraGoal, maxGoal, median, round1, round2, rounds as roundsOf, startLockHolder, type BenchResult } from './common.js';
import {
  open, closeQuiet, fcntlLock, flock, F_SETLK, F_OFD_SETLK, F_RDLCK, F_WRLCK, LOCK_EX, LOCK_SH, LOCK_NB, O_CLOEXEC,
} from '../src/sys/index.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** The floor: open each recorded file and take its lock, nothing else. Returns the fds. */
function bareRestore(ckpt: Checkpoint): number[] {
  const fdOf = new Map<number, number>();
  for (const f of ckpt.files) fdOf.set(f.id, open(f.path, (f.flags & 3) | O_CLOEXEC));
  for (const l of ckpt.locks) {
    const fd = fdOf.get(l.fileId)!;
    if (l.kind === 'FLOCK') flock(fd, (l.type === 'WRITE' ? LOCK_EX : LOCK_SH) | LOCK_NB);
    else fcntlLock(fd, l.kind === 'OFD' ? F_OFD_SETLK : F_SETLK, {
      type: l.type === 'WRITE' ? F_WRLCK : F_RDLCK, whence: 0, start: l.start, len: l.end === 'EOF' ? 0n : l.end - l.start + 1n, pid: 0,
    });
  }
  return [...fdOf.values()];
}

async function makeCheckpoint(dir: string, files: number, locks: number, dups: number): Promise<Checkpoint> {
  const child = await startLockHolder(dir, files, locks, dups);
  try {
    return dumpProcesses({ pids: [child.pid!] });
  } finally {
    child.kill('SIGKILL');
    await new Promise<void>((r) => { if (child.exitCode !== null || child.signalCode !== null) r(); else child.once('exit', () => r()); });
  }
}

/** spawn → exit of argv; checks the exit code and that the shim started Node.js once. */
function timed(argv: readonly string[], what: string): { ms: number; restoreMs?: number; reexec: boolean } {
  const t = performance.now();
  const c = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env: { ...process.env, LOCKMIG_LOG_LEVEL: 'info' } });
  const ms = performance.now() - t;
  if (c.status !== 0) throw new Error(`${what} failed (${c.status}): ${c.stderr}`);
  const line = c.stderr.split('\n').find((l) => l.includes('"locks restored"'));
  const restoreMs = line ? (JSON.parse(line) as { restoreMs: number }).restoreMs : undefined;
  return { ms, ...(restoreMs !== undefined ? { restoreMs } : {}), reexec: c.stderr.includes('re-executing once') };
}

export async function benchRestore(opts: { rounds?: number } = {}): Promise<BenchResult[]> {
  const rounds = opts.rounds ?? roundsOf(7);
  const dir = mkdtempSync(path.join(tmpdir(), 'lockmig-bench-restore-'));
  try {
    const big = await makeCheckpoint(path.join(dir, ''), 10_000, 2_000, 200);
    if (big.locks.length !== 2_000) throw new Error(`dump found ${big.locks.length} locks, expected 2000`);
    const bigImage = path.join(dir, 'ckpt-2000');
    writeCheckpoint(bigImage, big);
    const smallDir = mkdtempSync(path.join(dir, 'small-'));
    const small = await makeCheckpoint(smallDir, 4, 4, 0);
    if (small.locks.length !== 4) throw new Error(`dump found ${small.locks.length} locks, expected 4`);
    const smallImage = path.join(dir, 'ckpt-4');
    writeCheckpoint(smallImage, small);
    const maxFd = Math.max(...big.fds.map((f) => f.fd));
    process.stderr.write('restore bench: building the shim bundle …\n');
    const shim = path.join(dir, 'shim');
    buildShimBundle({ out: shim });

    // in-process, alternating with the baseline so both see the same machine load
    const base: number[] = [];
    const rest: number[] = [];
    for (let r = 0; r <= rounds; r++) {
      let t = performance.now();
      const fds = bareRestore(big);
      const b = performance.now() - t;
      for (const fd of fds) closeQuiet(fd);
      t = performance.now();
      const res = await restoreLocks(big, { allow: [dir], timeoutMs: 0, onConflict: 'remap' });
      const m = performance.now() - t;
      if (res.locks.length !== 2_000) throw new Error(`restore took ${res.locks.length} locks, expected 2000`);
      for (const f of res.fds) closeQuiet(f.fd);
      if (r === 0) continue;
      base.push(b);
      rest.push(m);
    }
    const rows: BenchResult[] = [{
      name: 'restore in-process, 2,000 locks', baseline: 'bare open+lock', baselineMs: round1(median(base)), ms: round1(median(rest)),
      ratio: round2(median(rest) / median(base)), goal: maxGoal(median(rest), 200),
      notes: `${big.files.length} descriptions, ${big.fds.length} fds up to fd ${maxFd}; validate, open, place, lock; median of ${rounds}`,
    }];

    // end to end, every kind interleaved in each round
    const cli = (image: string) => [process.execPath, CLI, 'restore', '--image', image, '--allow', dir, '--timeout', '0', '--', 'true'];
    const viaShim = (image: string) => [...shimCommand(shim), '--image', image, '--allow', dir, '--timeout', '0', '--', 'true'];
    const kinds = {
      node0: [process.execPath, '-e', '0'], shimNode0: [...shimNodeCommand(shim), '-e', '0'],
      cli4: cli(smallImage), cli2000: cli(bigImage), shim4: viaShim(smallImage), shim2000: viaShim(bigImage),
    } as const;
    const ms: Record<keyof typeof kinds, number[]> = { node0: [], shimNode0: [], cli4: [], cli2000: [], shim4: [], shim2000: [] };
    const inShim: Record<string, number[]> = { cli4: [], cli2000: [], shim4: [], shim2000: [] };
    let reexecs = 0;
    for (let r = 0; r <= rounds; r++) {
      for (const k of Object.keys(kinds) as (keyof typeof kinds)[]) {
        const t = timed(kinds[k], k);
        if (t.reexec) reexecs++;
        if (r === 0) continue;
        ms[k].push(t.ms);
        if (t.restoreMs !== undefined) inShim[k]!.push(t.restoreMs);
      }
    }
    const row = (name: string, k: 'cli4' | 'cli2000' | 'shim4' | 'shim2000', baseKey: 'node0' | 'shimNode0', baseName: string, extra: number): BenchResult => {
      const b = median(ms[baseKey]);
      const m = median(ms[k]);
      return {
        name, baseline: baseName, baselineMs: round1(b), ms: round1(m), ratio: round2(m / b), goal: extraGoal(m, b, extra),
        notes: `spawn → exit; +${round1(m - b)} ms over the baseline; restore itself ${round1(median(inShim[k]!))} ms; `
          + `${reexecs === 0 ? 'one Node.js start every run' : `${reexecs} run(s) RE-EXECUTED`}; median of ${rounds} (${ms[k].map((x) => x.toFixed(0)).join('/')} ms)`,
      };
    };
    rows.push(
      row('restore CLI -- true, 4 locks (fds 3-6)', 'cli4', 'node0', 'node -e 0', 100),
      row('restore CLI -- true, 2,000 locks', 'cli2000', 'node0', 'node -e 0', 150),
      row('restore shim bundle -- true, 4 locks', 'shim4', 'shimNode0', 'bundle node -e 0', 100),
      row('restore shim bundle -- true, 2,000 locks', 'shim2000', 'shimNode0', 'bundle node -e 0', 150),
    );
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  benchRestore().then((r) => { process.stdout.write(`${JSON.stringify(r, null, 2)}\n`); }, (e: unknown) => { console.error(e); process.exitCode = 1; });
}
