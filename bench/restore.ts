/**
 * Restore benchmark: a source process holds 10,000 open files with 2,000 locks (OFD
 * read/write, POSIX read/write, flock shared/exclusive); it is dumped and killed, then
 *
 *  - in-process: restoreLocks() recreates the 2,000 locked descriptions (plus 200 dups) at
 *    their fd numbers (up to ~10,000) and re-takes every lock; target < 200 ms.
 *    Baseline, same run: the bare syscalls any restore must make — open each recorded path
 *    and take its lock through koffi, with no validation, placement or seek.
 *  - end to end: `node dist/src/cli/main.js restore --image … -- true` from spawn to exit,
 *    i.e. Node.js start (twice: the fd reservation re-exec), image read, path checks,
 *    restore, execve. Baseline, same run: `node -e 0` (one bare Node.js start).
 *
 * Run alone: node dist/bench/restore.js (prints JSON). bench/run.ts calls benchRestore().
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dumpProcesses } from '../src/engine/dump.js';
import { restoreLocks } from '../src/engine/restore.js';
import { writeCheckpoint, type Checkpoint } from '../src/image/index.js';
import { median, startLockHolder, type BenchResult } from './common.js';
import {
  open, closeQuiet, fcntlLock, flock, F_SETLK, F_OFD_SETLK, F_RDLCK, F_WRLCK, LOCK_EX, LOCK_SH, LOCK_NB, O_CLOEXEC,
} from '../src/sys/index.js';



const r1 = (x: number) => Math.round(x * 10) / 10;
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

export async function benchRestore(opts: { files?: number; locks?: number; dups?: number; rounds?: number; endToEnd?: boolean } = {}): Promise<BenchResult[]> {
  const files = opts.files ?? 10_000;
  const locks = opts.locks ?? 2_000;
  const dups = opts.dups ?? 200;
  const rounds = opts.rounds ?? 5;
  const dir = mkdtempSync(path.join(tmpdir(), 'lockmig-bench-restore-'));
  const image = path.join(dir, 'ckpt');
  try {
    const ckpt = await makeCheckpoint(dir, files, locks, dups);
    if (ckpt.locks.length !== locks) throw new Error(`dump found ${ckpt.locks.length} locks, expected ${locks}`);
    writeCheckpoint(image, ckpt);
    const maxFd = Math.max(...ckpt.fds.map((f) => f.fd));

    // in-process, alternating with the baseline so both see the same machine load
    const base: number[] = [];
    const rest: number[] = [];
    const phases = { validateMs: [] as number[], openMs: [] as number[], lockMs: [] as number[] };
    for (let r = 0; r <= rounds; r++) { // round 0 warms up both
      let t = performance.now();
      const fds = bareRestore(ckpt);
      const b = performance.now() - t;
      for (const fd of fds) closeQuiet(fd);
      t = performance.now();
      const res = await restoreLocks(ckpt, { allow: [dir], timeoutMs: 0, onConflict: 'remap' });
      const m = performance.now() - t;
      if (res.locks.length !== locks) throw new Error(`restore took ${res.locks.length} locks, expected ${locks}`);
      for (const f of res.fds) closeQuiet(f.fd);
      if (r === 0) continue;
      base.push(b);
      rest.push(m);
      phases.validateMs.push(res.timings.validateMs);
      phases.openMs.push(res.timings.openMs);
      phases.lockMs.push(res.timings.lockMs);
    }
    const inProc: BenchResult = {
      name: 'restore (in-process)', baselineMs: r1(median(base)), ms: r1(median(rest)), ratio: Math.round((median(rest) / median(base)) * 100) / 100,
      notes: `${locks} locks on ${ckpt.files.length} descriptions, ${ckpt.fds.length} fds up to fd ${maxFd}, median of ${rounds}; `
        + `validate ${r1(median(phases.validateMs))} ms, open+place ${r1(median(phases.openMs))} ms, lock ${r1(median(phases.lockMs))} ms; `
        + `target < 200 ms: ${median(rest) < 200 ? 'met' : 'MISSED'}; baseline = bare open + lock syscalls`,
    };

    if (opts.endToEnd === false) return [inProc];
    // end to end through the CLI
    const e2e: number[] = [];
    const node: number[] = [];
    const shim: number[] = [];
    for (let r = 0; r <= Math.min(rounds, 3); r++) {
      let t = performance.now();
      const n = spawnSync(process.execPath, ['-e', '0']);
      const nm = performance.now() - t;
      if (n.status !== 0) throw new Error('node -e 0 failed');
      t = performance.now();
      const c = spawnSync(process.execPath, [CLI, 'restore', '--image', image, '--allow', dir, '--timeout', '0', '--', 'true'], { encoding: 'utf8' });
      const cm = performance.now() - t;
      if (c.status !== 0) throw new Error(`restore CLI failed (${c.status}): ${c.stderr}`);
      if (r === 0) continue;
      node.push(nm);
      e2e.push(cm);
      const line = c.stderr.split('\n').find((l) => l.includes('"locks restored"'));
      if (line) shim.push((JSON.parse(line) as { restoreMs: number }).restoreMs);
    }
    const endToEnd: BenchResult = {
      name: 'restore (CLI end to end)', baselineMs: r1(median(node)), ms: r1(median(e2e)), ratio: Math.round((median(e2e) / median(node)) * 100) / 100,
      notes: `spawn → exit of \`lockmig restore … -- true\` incl. two Node.js starts (fd reservation); restore inside the shim ${shim.length ? r1(median(shim)) : '?'} ms; baseline = \`node -e 0\``,
    };
    return [inProc, endToEnd];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  benchRestore().then((r) => { process.stdout.write(`${JSON.stringify(r)}\n`); }, (e: unknown) => { console.error(e); process.exitCode = 1; });
}
