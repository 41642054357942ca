/**
 * Dump benchmark: one process (python3, not lockmig code) holding 10,000 open files and 2,000
 * locks (OFD, POSIX and flock, read and write; 200 of the locked fds dup'ed so kcmp grouping
 * runs). Every round runs, one after the other on the same process, so every ratio compares
 * numbers taken under the same machine load:
 *
 *  - the C floor (bench/floor.c, gcc -O2): every fdinfo file and fd link read, nothing else;
 *  - `lockmig dump --pid P --out D` as a whole process (spawn → exit: Node.js start, module
 *    loading, dump, image write with fsyncs);
 *  - the dump inside this process (dumpProcesses + writeCheckpoint), as the agent runs it;
 *  - CRIU 4.x `criu dump --file-locks --leave-running` of the whole process (memory too), when
 *    criu 4.x is on PATH.
 *
 * Rows (issue 10): CLI ≤ 0.5× CRIU; CLI ≤ 2× the floor (whole process each); in-process dump +
 * write ≤ 1.5× the floor's own reading time. Medians of LOCKMIG_BENCH_ROUNDS (default 7) rounds
 * after one warm-up round.
 *
 * Run alone: node dist/bench/dump.js (root; prints JSON). bench/run.ts calls benchDump().
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dumpProcesses } from '../src/engine/dump.js';
import { writeDump } from '../src/engine/write.js';
import { median, ratioGoal, round1, round2, rounds as roundsOf, startLockHolder, type BenchResult } from './common.js';
import { buildFloor, findCriu4, runCriuDump, runFloor } from './baselines.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

export async function benchDump(opts: { files?: number; locks?: number; dups?: number; rounds?: number } = {}): Promise<BenchResult[]> {
  const files = opts.files ?? 10_000;
  const locks = opts.locks ?? 2_000;
  const dups = opts.dups ?? 200;
  const rounds = opts.rounds ?? roundsOf(7);
  const floor = buildFloor();
  if ('error' in floor) throw new Error(`C floor: ${floor.error}`);
  const criu = findCriu4();
  if ('error' in criu) process.stderr.write(`\n!!!!!!!! dump bench: ${criu.error} — the CRIU row is NOT measured !!!!!!!!\n\n`);
  const dir = mkdtempSync(path.join(tmpdir(), 'lockmig-bench-dump-'));
  const child = await startLockHolder(dir, files, locks, dups).catch((e: unknown) => {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  });
  try {
    const pid = child.pid!;
    const m = { floorWall: [] as number[], floorRead: [] as number[], cli: [] as number[], inproc: [] as number[], inprocDump: [] as number[], criu: [] as number[] };
    let ckpt = dumpProcesses({ pids: [pid] });
    for (let r = 0; r <= rounds; r++) { // round 0 warms the page cache and the JIT for every side
      const f = runFloor(floor.bin, pid);
      if (f.fds < files) throw new Error(`the floor read ${f.fds} fds, expected ≥ ${files}`);

      let t = performance.now();
      const c = spawnSync(process.execPath, [CLI, 'dump', '--pid', String(pid), '--out', path.join(dir, 'cli')], { encoding: 'utf8' });
      const cliMs = performance.now() - t;
      if (c.status !== 0) throw new Error(`lockmig dump failed (${c.status}): ${c.stderr}`);

      t = performance.now();
      ckpt = dumpProcesses({ pids: [pid] });
      const t1 = performance.now();
      writeDump(path.join(dir, 'inproc'), ckpt);
      const t2 = performance.now();

      const criuMs = 'error' in criu ? NaN : runCriuDump(criu.bin, pid, path.join(dir, `criu-${r}`));
      if (r === 0) continue;
      m.floorWall.push(f.wallMs); m.floorRead.push(f.readMs); m.cli.push(cliMs);
      m.inproc.push(t2 - t); m.inprocDump.push(t1 - t); m.criu.push(criuMs);
      process.stderr.write(`dump bench round ${r}/${rounds}: floor ${f.wallMs.toFixed(0)} ms, cli ${cliMs.toFixed(0)} ms, in-process ${(t2 - t).toFixed(0)} ms, criu ${criuMs.toFixed(0)} ms\n`);
    }
    if (ckpt.locks.length !== locks) throw new Error(`dump found ${ckpt.locks.length} locks, expected ${locks}`);
    const what = `${files} fds, ${locks} locks (OFD/POSIX/flock, ${dups} dup'ed), median of ${rounds}`;
    const cli = median(m.cli);
    const floorWall = median(m.floorWall);
    const floorRead = median(m.floorRead);
    const inproc = median(m.inproc);
    const rows: BenchResult[] = [];
    if (!('error' in criu)) {
      const c = median(m.criu);
      rows.push({
        name: 'dump CLI, whole process', baseline: `CRIU ${criu.version} dump`, baselineMs: round1(c), ms: round1(cli), ratio: round2(cli / c),
        goal: ratioGoal(cli, c, 0.5),
        notes: `${what}; criu dump --file-locks --leave-running (memory included); rounds criu ${m.criu.map((x) => x.toFixed(0)).join('/')} ms`,
      });
    } else {
      rows.push({ name: 'dump CLI, whole process', baseline: 'CRIU 4.x dump', baselineMs: NaN, ms: round1(cli), ratio: NaN, goal: { text: '≤ 0.50×', met: false }, notes: `NOT MEASURED: ${criu.error}` });
    }
    rows.push({
      name: 'dump CLI, whole process', baseline: 'C floor process', baselineMs: round1(floorWall), ms: round1(cli), ratio: round2(cli / floorWall),
      goal: ratioGoal(cli, floorWall, 2),
      notes: `${what}; spawn → exit both; rounds lockmig ${m.cli.map((x) => x.toFixed(0)).join('/')} ms`,
    });
    rows.push({
      name: 'dump in-process + image write', baseline: 'C floor read', baselineMs: round1(floorRead), ms: round1(inproc), ratio: round2(inproc / floorRead),
      goal: ratioGoal(inproc, floorRead, 1.5),
      notes: `${what}; dumpProcesses ${round1(median(m.inprocDump))} ms + writeDump ${round1(inproc - median(m.inprocDump))} ms (4 files flushed together, 2 directory flushes); floor = its own reading loop; ${ckpt.fds.length} fds and ${ckpt.files.length} files recorded`,
    });
    return rows;
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  benchDump().then((r) => { process.stdout.write(`${JSON.stringify(r, null, 2)}\n`); }, (e: unknown) => { console.error(e); process.exitCode = 1; });
}
