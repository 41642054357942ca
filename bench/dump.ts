/**
 * Dump benchmark: one process holding 10,000 open files and 2,000 locks (OFD read/write,
 * POSIX read/write, flock shared/exclusive; 200 of the locked fds dup'ed so kcmp grouping
 * runs), timed against a baseline measured in the same run: plain reads of the same
 * 10,000 fdinfo files plus 10,000 fd links. Target: dump + writeCheckpoint within 2×.
 *
 * Run alone: node dist/bench/dump.js (root; prints JSON). bench/run.ts calls benchDump().
 */
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { dumpProcesses } from '../src/engine/dump.js';
import { writeCheckpoint } from '../src/image/index.js';
import { median, startLockHolder, type BenchResult } from './common.js';



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


export async function benchDump(opts: { files?: number; locks?: number; dups?: number; rounds?: number } = {}): Promise<BenchResult> {
  const files = opts.files ?? 10_000;
  const locks = opts.locks ?? 2_000;
  const dups = opts.dups ?? 200;
  const rounds = opts.rounds ?? 5;
  const dir = mkdtempSync(path.join(tmpdir(), 'lockmig-bench-dump-'));
  const outDir = path.join(dir, 'ckpt');
  const child = await startLockHolder(dir, files, locks, dups).catch((e: unknown) => {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  });
  try {
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
