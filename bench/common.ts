/**
 * What the benchmarks share: the result row every benchmark returns, the median, and the
 * lock-holding workload (a python3 process — not lockmig code — holding N open files and
 * M locks of every kind: OFD read/write, POSIX read/write, flock shared/exclusive; D of the
 * locked fds dup'ed so description grouping has work to do).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';

export interface BenchResult { name: string; baselineMs: number; ms: number; ratio: number; notes?: string }

export const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

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

/** Start the holder in `dir` and resolve once every lock is taken. The caller kills it. */
export async function startLockHolder(dir: string, files: number, locks: number, dups: number): Promise<ChildProcess> {
  const py = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const child = spawn(py, ['-c', HOLDER_PY, dir, String(files), String(locks), String(dups)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    const onExit = (c: number | null) => reject(new Error(`bench holder exited with ${c}`));
    child.once('exit', onExit);
    createInterface({ input: child.stdout! }).once('line', () => { child.off('exit', onExit); resolve(); });
  });
  return child;
}
