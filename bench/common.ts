/**
 * What the benchmarks share: the result row every benchmark returns, the median, and the
 * lock-holding workload (a python3 process — not lockmig code — holding N open files and
 * M locks of every kind: OFD read/write, POSIX read/write, flock shared/exclusive; D of the
 * locked fds dup'ed so description grouping has work to do).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';

/** A target from issue 10, checked against the numbers of the same run. */
export interface Goal { readonly text: string; readonly met: boolean }

export interface BenchResult {
  name: string;
  /** what the baseline is, e.g. "CRIU 4.2 dump" (shown in the table) */
  baseline?: string;
  baselineMs: number;
  ms: number;
  ratio: number;
  goal?: Goal;
  notes?: string;
  /** unit of baselineMs/ms when they are not milliseconds (e.g. " MB"); the table prints it */
  unit?: string;
}

export const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export const round1 = (x: number): number => Math.round(x * 10) / 10;
export const round2 = (x: number): number => Math.round(x * 100) / 100;

/** result ≤ max × baseline */
export function ratioGoal(ms: number, baselineMs: number, max: number): Goal {
  return { text: `≤ ${max.toFixed(2)}×`, met: ms <= max * baselineMs };
}

/** result ≤ baseline + extra ms */
export function extraGoal(ms: number, baselineMs: number, extraMs: number): Goal {
  return { text: `≤ base + ${extraMs} ms`, met: ms <= baselineMs + extraMs };
}

/** result ≤ an absolute number of ms */
export function maxGoal(ms: number, maxMs: number): Goal {
  return { text: `≤ ${maxMs} ms`, met: ms <= maxMs };
}

/** How many measured rounds (after one warm-up) each benchmark runs: LOCKMIG_BENCH_ROUNDS, default `def`. */
export function rounds(def: number): number {
  const n = Number(process.env.LOCKMIG_BENCH_ROUNDS);
  return Number.isInteger(n) && n > 0 ? n : def;
}

const HOLDER_PY = String.raw`
import os, sys, fcntl, struct, resource, signal
d, nfiles, nlocks, ndup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_NOFILE, (nfiles + ndup + 100, nfiles + ndup + 100))
fds = []
for i in range(nfiles):
    fds.append(os.open(f'{d}/f{i:05d}', os.O_RDWR | os.O_CREAT, 0o644))
step = nfiles // nlocks
for j in range(nlocks):
    fd = fds[j * step]
    k = j % 6
    if k == 0: fcntl.fcntl(fd, 37, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))
    elif k == 1: fcntl.fcntl(fd, 37, struct.pack('hhqqi', fcntl.F_RDLCK, 0, 100, 50, 0))
    elif k == 2: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
    elif k == 3: fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 0, 4096)
    elif k == 4: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
for j in range(ndup):
    os.dup(fds[j * step])
print('ready', flush=True)
while True: signal.pause()
`;

/** The holder's command line (it prints `ready` on stdout once every lock is taken), for callers that start it themselves. */
export function lockHolderArgv(dir: string, files: number, locks: number, dups: number): string[] {
  return [existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3', '-c', HOLDER_PY, dir, String(files), String(locks), String(dups)];
}

/**
 * Start the holder in `dir` and resolve once every lock is taken. The caller kills it. Its stdio
 * are plain files in `dir` (not the pipes/sockets Node.js would give it), so CRIU can dump it.
 */
export async function startLockHolder(dir: string, files: number, locks: number, dups: number): Promise<ChildProcess> {
  const py = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const outFile = path.join(dir, 'holder.out');
  const out = openSync(outFile, 'w+');
  const child = spawn(py, ['-c', HOLDER_PY, dir, String(files), String(locks), String(dups)], { stdio: ['ignore', out, out] });
  closeSync(out);
  const deadline = Date.now() + 120_000;
  for (;;) {
    const text = readFileSync(outFile, 'utf8');
    if (text.includes('ready')) return child;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`bench holder exited with ${child.exitCode ?? child.signalCode}: ${text}`);
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error('bench holder did not get ready in 120 s'); }
    await new Promise((r) => setTimeout(r, 20));
  }
}
