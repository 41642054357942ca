/**
 * Handover benchmark: time from "stop the source" (SIGKILL) to "the target holds every lock"
 * (as the kernel shows it in /proc/locks), for 1, 100 and 1,000 locks, two ways in the same run:
 *
 *  - re-take (baseline): the target is started through `lockmig restore` BEFORE the source
 *    stops and is already waiting (B's restore polls busy locks with 1→20 ms backoff); after the
 *    stop it re-takes every lock.
 *  - handover: the vault took the source's descriptions (pidfd_getfd) before the stop; the
 *    target (`lockmig restore --handover`) received them and queued F_SETLKW for the POSIX
 *    locks. OFD/flock locks are never free (0 ms); POSIX locks are granted by the kernel
 *    to the queued waiters.
 *
 * Lock mix: round-robin OFD write, flock exclusive, POSIX write, one file each (1 lock = OFD);
 * plus a 1,000-lock OFD+flock row (what moves with no window at all).
 * "Held" counts only once the source has exited (before that its own locks are on the files).
 * The end is detected by polling /proc/locks (one read of it is the resolution) for every lock on the
 * recorded inodes: POSIX with the target's pid, OFD/flock with any owner (the source is dead).
 * Median of REPS runs per row. Run alone: node dist/bench/handover.js (prints JSON).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dumpProcesses } from '../src/engine/dump.js';
import { writeCheckpoint, type Checkpoint } from '../src/image/index.js';
import { Vault, PidMatcher } from '../src/handover/index.js';
import { parseProcLocks } from '../src/handover/posix.js';
import { median, round2, type BenchResult } from './common.js';


const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const REPS = Number(process.env.LOCKMIG_BENCH_REPS ?? 3);

const HOLDER = String.raw`
import os, sys, fcntl, struct, resource, signal
d, n, kinds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 200, n + 200))
for i in range(n):
    fd = os.open(f'{d}/f{i:05d}', os.O_RDWR | os.O_CREAT, 0o644)
    k = i % kinds if kinds else 2
    if k == 0: fcntl.fcntl(fd, 37, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))
    elif k == 1: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else: fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))
print('ready', flush=True)
while True: signal.pause()
`;

function lineOf(child: ChildProcess, stream: 'stdout' | 'stderr', match: (l: string) => boolean, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child[stream]! });
    const t = setTimeout(() => { rl.close(); reject(new Error(`timed out waiting on ${stream}`)); }, timeoutMs);
    rl.on('line', (l) => { if (match(l)) { clearTimeout(t); rl.close(); resolve(l); } });
    child.once('exit', (c) => { clearTimeout(t); reject(new Error(`process exited (${c}) while waiting on ${stream}`)); });
  });
}

async function startHolder(dir: string, n: number, kinds: number): Promise<ChildProcess> {
  const child = spawn(PYTHON, ['-c', HOLDER, dir, String(n), String(kinds)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await lineOf(child, 'stdout', (l) => l === 'ready');
  return child;
}

/** Does the kernel show every lock of ckpt held: POSIX by `target`, OFD/flock by anyone (the source is dead)? */
function allHeld(ckpt: Checkpoint, target: number): boolean {
  const want = new Map<bigint, string>();
  const files = new Map(ckpt.files.map((f) => [f.id, f.ino]));
  for (const l of ckpt.locks) want.set(files.get(l.fileId)!, l.kind === 'OFD' ? 'OFDLCK' : l.kind);
  let n = 0;
  for (const l of parseProcLocks(fs.readFileSync('/proc/locks', 'utf8'))) {
    if (l.waiter) continue;
    const kind = want.get(l.ino);
    if (kind === undefined || kind !== l.kind) continue;
    // flock lines keep the pid of whoever took the lock (the dead source after a handover):
    // with the source gone, any OFD/flock lock on these inodes sits on the target's description
    if (kind === 'POSIX' && l.pid !== target) continue;
    n++;
  }
  return n >= want.size;
}

/** The source has exited (zombie or reaped): its files are closed, its locks are no longer its own. */
function gone(pid: number): boolean {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}

/**
 * Until the source has exited its own locks are still on the files, so "held" only counts
 * once it is gone; for a handover that makes the OFD/flock part equal to the source's exit.
 */
async function waitAllHeld(ckpt: Checkpoint, target: number, source: number, timeoutMs = 60_000): Promise<bigint> {
  const deadline = Date.now() + timeoutMs;
  while (!gone(source)) {
    if (Date.now() > deadline) throw new Error(`source ${source} did not exit`);
    await new Promise((r) => setImmediate(r));
  }
  for (;;) {
    // the time a successful check STARTED: the kernel showed every lock held at some point
    // during that read, so this is the reading's resolution floor, the same for both modes
    const start = process.hrtime.bigint();
    if (allHeld(ckpt, target)) return start;
    if (Date.now() > deadline) {
      const inos = new Set(ckpt.files.map((f) => f.ino));
      const seen = parseProcLocks(fs.readFileSync('/proc/locks', 'utf8')).filter((l) => inos.has(l.ino));
      throw new Error(`the target (pid ${target}) never held every lock: /proc/locks shows ${seen.length} of ${ckpt.locks.length} (${JSON.stringify(seen.slice(0, 3), (_k, v) => typeof v === 'bigint' ? v.toString() : v)})`);
    }
    await new Promise((r) => setImmediate(r));
  }
}

async function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise((r) => child.once('exit', r));
}

interface One { ms: number; posixNotQueued: number; waiterLines: number; lastGrantMs?: number }

/** kinds 3: OFD, flock, POSIX round-robin; kinds 2: OFD and flock only; kinds 0: POSIX only */
async function once(mode: 'retake' | 'handover', n: number, root: string, i: number, kinds = 3): Promise<One> {
  const dir = fs.mkdtempSync(path.join(root, `${mode}-${n}-`));
  process.stderr.write(`handover bench: ${mode}, ${n} locks, run ${i + 1}\n`);
  const holder = await startHolder(dir, n, kinds);
  let target: ChildProcess | null = null;
  const vault = mode === 'handover' ? new Vault({ socketPath: path.join(dir, 'v.sock') }) : null;
  try {
    const ckpt = dumpProcesses({ pids: [holder.pid!] });
    if (ckpt.locks.length !== n) throw new Error(`dump found ${ckpt.locks.length} locks, expected ${n}`);
    const img = path.join(dir, 'img');
    writeCheckpoint(img, ckpt);
    const name = `bench/${mode}-${n}-${i}`;
    const posix = ckpt.locks.filter((l) => l.kind === 'POSIX').length;
    const args = [CLI, 'restore', '--image', img, '--allow', dir, '--timeout', '120',
      ...(vault ? ['--handover', vault.socketPath, '--checkpoint', name] : []), '--', 'sleep', '600'];
    let notQueued = 0;
    let waiterLines = 0;
    let t0 = 0n;
    let goneAt = 0n;
    if (vault) {
      vault.takeOver(name, ckpt, { releaseAfterMs: 120_000 });
      vault.start();
    }
    target = spawn(process.execPath, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      // no UV_THREADPOOL_SIZE: with liblockmig every POSIX wait has a thread of its own
      env: { ...process.env, LOCKMIG_LOG_LEVEL: 'info' },
    });
    if (vault) {
      vault.setTarget(name, new PidMatcher(target.pid!));
      const ready = await new Promise<{ queuedPosix: number }>((resolve, reject) => {
        vault.once('ready', resolve);
        let err = '';
        target!.stderr?.on('data', (d: Buffer) => { err += d.toString(); });
        target!.once('exit', (c) => reject(new Error(`target exited (${c}) before ready: ${err.slice(-2000)}`)));
      });
      notQueued = posix - ready.queuedPosix;
      // the kernel's own view: one "->" line per blocked F_SETLKW of the target in /proc/locks
      waiterLines = parseProcLocks(fs.readFileSync('/proc/locks', 'utf8')).filter((l) => l.waiter && l.kind === 'POSIX' && l.pid === target!.pid).length;
    } else {
      // B's shim logs this once its first attempt found locks busy and it starts polling
      await lineOf(target, 'stderr', (l) => l.includes('waiting for locks held elsewhere'));
    }
    // the shim logs when its last POSIX wait returned (CLOCK_MONOTONIC, as hrtime here)
    const held = vault && posix > 0 ? lineOf(target, 'stderr', (l) => l.includes('"handover-confirmed"'), 30_000)
      .then((l) => {
        const j = JSON.parse(l) as { lastGrantNs?: string; firstGrantNs?: string };
        if (process.env.LOCKMIG_BENCH_DEBUG) process.stderr.write(`first grant ${(Number(BigInt(j.firstGrantNs ?? '0') - t0) / 1e6).toFixed(2)} ms, source gone ${(Number(goneAt - t0) / 1e6).toFixed(2)} ms\n`);
        return BigInt(j.lastGrantNs ?? '0');
      }, () => 0n) : null;
    target.stderr?.resume();
    t0 = process.hrtime.bigint();
    holder.kill('SIGKILL');
    void new Promise<void>((r) => holder.once('exit', () => { goneAt = process.hrtime.bigint(); r(); }));
    const t1 = await waitAllHeld(ckpt, target.pid!, holder.pid!, 20_000).catch((err: Error) => {
      throw new Error(`${mode} with ${n} locks: ${err.message}`);
    });
    const last = held ? await Promise.race([held, new Promise<null>((r) => setTimeout(() => r(null), 5000))]) : null;
    if (process.env.LOCKMIG_BENCH_DEBUG) process.stderr.write(`${mode}: source gone ${(Number(goneAt - t0) / 1e6).toFixed(2)} ms, all held (poll) ${(Number(t1 - t0) / 1e6).toFixed(2)} ms\n`);
    return { ms: Number(t1 - t0) / 1e6, posixNotQueued: notQueued, waiterLines, ...(last && last > 0n ? { lastGrantMs: Number(last - t0) / 1e6 } : {}) };
  } finally {
    holder.kill('SIGKILL');
    await waitExit(holder);
    if (target) { target.kill('SIGKILL'); await waitExit(target); }
    await vault?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}


export async function benchHandover(): Promise<BenchResult[]> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-bench-ho-'));
  const rows: BenchResult[] = [];
  try {
    const all: { n: number; kinds: number }[] = [{ n: 1, kinds: 3 }, { n: 100, kinds: 3 }, { n: 1000, kinds: 3 }, { n: 1000, kinds: 2 }, { n: 1000, kinds: 0 }];
    // LOCKMIG_BENCH_HANDOVER=1000:0,100:3 runs only those rows (n:kinds)
    const only = process.env.LOCKMIG_BENCH_HANDOVER?.split(',').map((x) => x.split(':').map(Number) as [number, number]);
    const configs = only ? all.filter((c) => only.some(([n, k]) => n === c.n && k === c.kinds)) : all;
    for (const { n, kinds } of configs) {
      const base: number[] = [];
      const ho: number[] = [];
      let nq = 0;
      let waiters = Number.MAX_SAFE_INTEGER;
      const grants: number[] = [];
      for (let i = 0; i < REPS; i++) {
        base.push((await once('retake', n, root, i, kinds)).ms);
        const h = await once('handover', n, root, i, kinds);
        ho.push(h.ms);
        nq = Math.max(nq, h.posixNotQueued);
        waiters = Math.min(waiters, h.waiterLines);
        if (h.lastGrantMs !== undefined) grants.push(h.lastGrantMs);
      }
      const b = median(base);
      const m = median(ho);
      const posix = kinds === 0 ? n : kinds === 3 ? Math.floor(n / 3) : 0;
      const mix = n === 1 ? '1 OFD'
        : kinds === 2 ? `${n / 2} OFD, ${n / 2} flock, no POSIX`
          : kinds === 0 ? `${n} POSIX`
            : `${Math.ceil(n / 3)} OFD, ${Math.ceil((n - 1) / 3)} flock, ${Math.floor(n / 3)} POSIX`;
      const name = `handover stop→hold, ${n} lock${n > 1 ? 's' : ''}${kinds === 2 ? ' (OFD+flock)' : kinds === 0 ? ' (POSIX)' : ''}`;
      rows.push({
        name, baseline: 're-take', baselineMs: round2(b), ms: round2(m), ratio: b > 0 ? round2(m / b) : 0,
        ...(kinds === 0 ? { goal: { text: '≤ 5 ms, 0 not queued', met: m <= 5 && nq === 0 } } : {}),
        notes: `baseline: re-take by a waiting shim; ${mix}; OFD/flock never free with handover`
          + `${posix > 0 && n > 1 ? `, POSIX granted to queued F_SETLKW: ${nq} of ${posix} not queued before the stop, ≥ ${waiters} "->" waiter lines of the target in /proc/locks` : ''}`
          + `${grants.length > 0 ? `; stop → last POSIX grant as the target's waiter threads timed it: median ${median(grants).toFixed(2)} ms (${grants.map((x) => x.toFixed(1)).join('/')})` : ''}`
          + `; median of ${REPS} (re-take ${base.map((x) => x.toFixed(1)).join('/')} ms, handover ${ho.map((x) => x.toFixed(1)).join('/')} ms)`,
      });
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  return rows;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  benchHandover().then((r) => process.stdout.write(`${JSON.stringify(r, null, 2)}\n`), (e: unknown) => { console.error(e); process.exitCode = 1; });
}
