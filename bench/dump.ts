/**
 * Dump benchmark: one process holding 10,000 open files and 2,000 locks (OFD read/write,
 * POSIX read/write, flock shared/exclusive; 200 of the locked fds dup'ed so kcmp grouping
 * runs), timed against a baseline measured in the same run: plain reads of the same
 * 10,000 fdinfo files plus 10,000 fd links. Target: dump + writeCheckpoint within 2×.
 *
 * Run alone: node dist/bench/dump.js (root; prints JSON). B's bench/run.ts calls benchDump().
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { dumpProcesses } from '../src/engine/dump.js';
import { writeCheckpoint } from '../src/image/index.js';

const PY = String.raw`
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

export interface BenchResult { name: string; baselineMs: number; ms: number; ratio: number; notes?: string }

/** The raw floor: what any dump must read, done as plainly as Node can. */
function baselineRead(pid: number): number {
  let n = 0;
  for (const e of readdirSync(`/proc/${pid}/fd`)) {
    readFileSync(`/proc/${pid}/fdinfo/${e}`, 'utf8');
    readlinkSync(`/proc/${pid}/fd/${e}`);
    n++;
  }
  return n;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function benchDump(opts: { files?: number; locks?: number; dups?: number; rounds?: number } = {}): Promise<BenchResult> {
  const files = opts.files ?? 10_000;
  const locks = opts.locks ?? 2_000;
  const dups = opts.dups ?? 200;
  const rounds = opts.rounds ?? 5;
  const dir = mkdtempSync(path.join(tmpdir(), 'lockmig-bench-dump-'));
  const outDir = path.join(dir, 'ckpt');
  const py = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const child = spawn(py, ['-c', PY, dir, String(files), String(locks), String(dups)], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', () => resolve());
      child.once('exit', (c) => reject(new Error(`bench holder exited with ${c}`)));
    });
    const pid = child.pid!;
    // warm-up (page cache, JIT) for both sides
    baselineRead(pid);
    let ckpt = dumpProcesses({ pids: [pid] });
    const base: number[] = [];
    const dump: number[] = [];
    const dumpOnly: number[] = [];
    for (let r = 0; r < rounds; r++) {
      let t = performance.now();
      const n = baselineRead(pid);
      base.push(performance.now() - t);
      if (n < files) throw new Error(`holder has only ${n} fds`);
      t = performance.now();
      ckpt = dumpProcesses({ pids: [pid] });
      const t1 = performance.now();
      writeCheckpoint(outDir, ckpt);
      dump.push(performance.now() - t);
      dumpOnly.push(t1 - t);
    }
    if (ckpt.locks.length !== locks) throw new Error(`dump found ${ckpt.locks.length} locks, expected ${locks}`);
    const baselineMs = median(base);
    const ms = median(dump);
    return {
      name: 'dump', baselineMs: Math.round(baselineMs * 10) / 10, ms: Math.round(ms * 10) / 10,
      ratio: Math.round((ms / baselineMs) * 100) / 100,
      notes: `${files} fds, ${locks} locks (OFD/POSIX/flock, ${dups} dup'ed), median of ${rounds}; `
        + `dumpProcesses alone ${Math.round(median(dumpOnly))} ms, writeCheckpoint ${Math.round(ms - median(dumpOnly))} ms; `
        + `${ckpt.fds.length} fds and ${ckpt.files.length} files recorded`,
    };
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  benchDump().then((r) => { process.stdout.write(`${JSON.stringify(r)}\n`); }, (e: unknown) => { console.error(e); process.exitCode = 1; });
}
