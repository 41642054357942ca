/**
 * `lockmig demo`: move real locks between two real processes on this machine.
 *
 *  1. a temporary volume (tmpfs, or a plain directory if tmpfs cannot be mounted);
 *  2. the old workload (python3, src/demo/scripts.ts) in its own mount+pid namespace
 *     (`unshare --mount --pid --fork --mount-proc`) takes an OFD write lock, a SQLite
 *     EXCLUSIVE transaction (POSIX locks) and a flock on files in the volume;
 *  3. lockmig dumps it (the library call the agent uses) and writes the images;
 *  4. the old workload is stopped (SIGTERM);
 *  5. the new workload starts in a new mount+pid namespace through the restore shim, the
 *     way the webhook wraps a container: `unshare … lockmig restore --image … -- python3 …`;
 *  6. independent contenders (python3 fcntl, flock(1), the sqlite3 CLI) and the kernel's
 *     own tables prove every lock is held by the new process; a table shows what moved and
 *     how long each step took; everything is cleaned up.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { dumpProcesses } from '../engine/dump.js';
import { writeCheckpoint, type Checkpoint, type LockRecord } from '../image/index.js';
import { WORKLOAD_PY, REPLACEMENT_PY, CONTEND_PY, SQLITE_WRITE_PY } from './scripts.js';

export class DemoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DemoError';
  }
}

export interface DemoOptions {
  /** where the report goes (stdout) */
  readonly out: (line: string) => void;
  /** keep the volume and images for inspection */
  readonly keep?: boolean;
  /** called with the new workload's host pid while it still holds every lock, before cleanup */
  readonly pause?: (newPid: number) => Promise<void>;
}

export interface Proof { readonly what: string; readonly how: string; readonly ok: boolean; readonly detail: string }

export interface DemoReport {
  readonly oldPid: number;
  readonly newPid: number;
  readonly volume: string;
  readonly tmpfs: boolean;
  readonly locks: readonly (LockRecord & { path: string; newFd: number | null })[];
  readonly proofs: readonly Proof[];
  readonly timings: { dumpMs: number; stopMs: number; restoreMs: number; shimRestoreMs: number | null; shimStartMs: number | null; windowMs: number };
}

export const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));
export const NS = ['--mount', '--pid', '--fork', '--kill-child', '--mount-proc'];

function which(tool: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** Tools the demo needs; returns what is missing. */
export function missingTools(): string[] {
  return ['unshare', 'python3', 'flock', 'mount'].filter((t) => which(t) === null);
}

export function descendants(pid: number): number[] {
  let kids: string[] = [];
  try { kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean); } catch { /* gone */ }
  return kids.flatMap((k) => [Number(k), ...descendants(Number(k))]);
}

export function comm(pid: number): string {
  try { return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch { return ''; }
}

/** The host pid of the python3 process under an `unshare` child. */
export function pythonUnder(pid: number): number {
  const p = descendants(pid).find((d) => comm(d).startsWith('python'));
  if (p === undefined) throw new DemoError(`no python3 process found under pid ${pid}`);
  return p;
}

export async function firstLine(child: ChildProcess, what: string, stderr: () => string, ms = 30_000): Promise<string> {
  const rl = createInterface({ input: child.stdout! });
  try {
    return await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new DemoError(`${what} did not start within ${ms / 1000} s; stderr: ${stderr()}`)), ms);
      rl.once('line', (l) => { clearTimeout(timer); resolve(l); });
      child.once('exit', (code) => { clearTimeout(timer); reject(new DemoError(`${what} exited (${code}) before it was ready; stderr: ${stderr()}`)); });
    });
  } finally {
    child.removeAllListeners('exit');
    rl.removeAllListeners('line');
  }
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => { clearTimeout(timer); resolve(true); });
  });
}

export interface ProcLock { kind: string; type: string; pid: number; ino: bigint; start: bigint; end: bigint | 'EOF' }
const LOCK_RE = /^(?:lock:\s+)?\d+:\s+(\S+)\s+\S+\s+(\S+)\s+(-?\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s+(\d+)\s+(\d+|EOF)\s*$/;
export function parseLocks(text: string): ProcLock[] {
  return text.split('\n').filter((l) => !l.includes('->')).map((l) => LOCK_RE.exec(l.trim())).filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ kind: m[1]!, type: m[2]!, pid: Number(m[3]), ino: BigInt(m[4]!), start: BigInt(m[5]!), end: m[6] === 'EOF' ? 'EOF' as const : BigInt(m[6]!) }));
}

export const procKind = (k: LockRecord['kind']) => (k === 'OFD' ? 'OFDLCK' : k);

export function contender(l: LockRecord, file: string): { how: string; refused: boolean; detail: string } {
  if (l.kind === 'FLOCK') {
    const r = spawnSync('flock', ['-n', '-E', '1', '-x', file, 'true'], { encoding: 'utf8' });
    return { how: 'flock -n -x (util-linux)', refused: r.status === 1, detail: `exit ${r.status}` };
  }
  const kind = l.kind === 'OFD' ? 'ofd' : 'posix';
  const r = spawnSync('python3', ['-c', CONTEND_PY, kind, file, String(l.start), '1'], { encoding: 'utf8' });
  return {
    how: `python3 fcntl ${l.kind === 'OFD' ? 'F_OFD_SETLK' : 'F_SETLK'} @${l.start}`,
    refused: r.status === 1,
    detail: r.status === 1 ? 'EAGAIN' : r.status === 0 ? 'acquired!' : `error ${r.stderr.trim()}`,
  };
}

export function sqliteContender(db: string): { how: string; refused: boolean; detail: string } {
  const sql = "insert into events values (datetime('now'), 'contender');";
  const r = which('sqlite3')
    ? spawnSync('sqlite3', ['-cmd', '.timeout 0', db, sql], { encoding: 'utf8' })
    : spawnSync('python3', ['-c', SQLITE_WRITE_PY, db], { encoding: 'utf8' });
  const locked = /database is locked/.test(r.stderr);
  return { how: which('sqlite3') ? 'sqlite3 CLI insert' : 'python3 sqlite3 insert (no sqlite3 CLI)', refused: r.status !== 0 && locked, detail: locked ? '"database is locked"' : `exit ${r.status} ${r.stderr.trim()}` };
}

export function fmtMs(ms: number): string {
  return `${ms.toFixed(1)} ms`;
}

export function table(rows: string[][]): string[] {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => `  ${r.map((c, i) => c.padEnd(w[i]!)).join('  ')}`.trimEnd());
}

/**
 * Start the old workload (python3 holding an OFD lock, SQLite BEGIN EXCLUSIVE and a flock on
 * files in `volume`) in its own mount+pid namespaces; resolves with its host pid once it
 * holds every lock. The unshare process is pushed onto `children` for cleanup.
 */
export async function startOldWorkload(volume: string, children: ChildProcess[]): Promise<{ child: ChildProcess; pid: number }> {
  let oldErr = '';
  const old = spawn('unshare', [...NS, 'python3', '-c', WORKLOAD_PY, volume], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(old);
  old.stderr!.on('data', (d: Buffer) => { oldErr += d.toString(); });
  await firstLine(old, 'the old workload', () => oldErr);
  return { child: old, pid: pythonUnder(old.pid!) };
}

export async function runDemo(opts: DemoOptions): Promise<DemoReport> {
  const out = opts.out;
  const cleanup: (() => void)[] = [];
  const volume = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-demo-vol-'));
  const imageDir = `${volume}.checkpoint`;
  cleanup.push(() => { if (!opts.keep) { fs.rmSync(volume, { recursive: true, force: true }); fs.rmSync(imageDir, { recursive: true, force: true }); } });
  const tmpfs = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0755', 'lockmig-demo', volume], { encoding: 'utf8' }).status === 0;
  if (tmpfs) cleanup.push(() => { if (!opts.keep) spawnSync('umount', ['-l', volume]); });
  const children: ChildProcess[] = [];
  const killAll = () => {
    for (const c of children) {
      if (c.pid !== undefined) for (const d of descendants(c.pid)) { try { process.kill(d, 'SIGKILL'); } catch { /* gone */ } }
      c.kill('SIGKILL');
    }
  };
  cleanup.push(killAll);
  try {
    out(`lockmig demo — moving file locks between two processes in separate mount+pid namespaces`);
    out(`  volume: ${volume} (${tmpfs ? 'tmpfs' : 'directory on the host file system'}), images: ${imageDir}`);

    // 2. the old workload
    out('\n[1/5] starting the old workload (python3: OFD lock, SQLite BEGIN EXCLUSIVE, flock) in its own namespaces');
    const { child: old, pid: oldPid } = await startOldWorkload(volume, children);
    out(`      old workload: host pid ${oldPid} (pid 1 in its own pid namespace)`);

    // 3. dump
    out('[2/5] dumping its locks');
    const t0 = performance.now();
    const ckpt: Checkpoint = dumpProcesses({ pids: [oldPid], tree: true });
    writeCheckpoint(imageDir, ckpt);
    const dumpMs = performance.now() - t0;
    const pathOf = new Map(ckpt.files.map((f) => [f.id, f.path]));
    out(`      ${ckpt.locks.length} locks on ${ckpt.files.length} files recorded in ${fmtMs(dumpMs)}`);
    if (ckpt.locks.length === 0) throw new DemoError('the dump found no locks: is /proc/<pid>/fdinfo readable?');

    // 4. stop
    out('[3/5] stopping the old workload (SIGTERM)');
    const t1 = performance.now();
    process.kill(oldPid, 'SIGTERM');
    if (!(await waitExit(old, 5000))) { old.kill('SIGKILL'); await waitExit(old, 5000); }
    const stopMs = performance.now() - t1;
    const stoppedAt = performance.now();

    // 5. restore through the shim, as the first process of a new "pod"
    out('[4/5] starting the new workload through the restore shim (new mount+pid namespaces)');
    const t2 = performance.now();
    let newErr = '';
    const neu = spawn('unshare', [...NS, process.execPath, CLI, 'restore', '--image', imageDir, '--allow', volume, '--timeout', '10', '--', 'python3', '-c', REPLACEMENT_PY],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(neu);
    neu.stderr!.on('data', (d: Buffer) => { newErr += d.toString(); });
    const report = JSON.parse(await firstLine(neu, 'the restore shim', () => newErr)) as { pid: number; inherited: { fd: number; kind: string; path: string }[] };
    const restoreMs = performance.now() - t2;
    const windowMs = performance.now() - stoppedAt;
    const newPid = pythonUnder(neu.pid!);
    const shimLine = newErr.split('\n').filter((l) => l.startsWith('{')).map((l) => { try { return JSON.parse(l) as Record<string, unknown>; } catch { return {}; } })
      .find((l) => l.message === 'locks restored');
    out(`      new workload: host pid ${newPid} (pid ${report.pid} in its namespace); it inherited ${report.inherited.length} fd entries via LOCKMIG_FDS`);

    // 6. proofs
    out('[5/5] checking, with programs lockmig did not write, who holds each lock');
    const procLocks = parseLocks(fs.readFileSync('/proc/locks', 'utf8'));
    const proofs: Proof[] = [];
    const moved: DemoReport['locks'][number][] = [];
    for (const l of ckpt.locks) {
      const recorded = pathOf.get(l.fileId)!;
      const file = recorded; // same mount of the volume in both namespaces
      const ino = fs.statSync(file, { bigint: true }).ino;
      const entry = report.inherited.find((e) => e.path === recorded && e.kind === l.kind) ?? report.inherited.find((e) => e.path === recorded);
      const newFd = entry?.fd ?? null;
      moved.push({ ...l, path: recorded, newFd });
      // kernel: /proc/locks (+ the new process's fdinfo for description locks)
      const k = procLocks.filter((p) => p.ino === ino && p.kind === procKind(l.kind) && p.type === l.type && p.start === l.start && p.end === l.end);
      const owner = l.kind === 'OFD' ? k.some((p) => p.pid === -1) : k.some((p) => p.pid === newPid);
      let fdinfoOk = true;
      if (l.kind !== 'POSIX' && newFd !== null) {
        const info = fs.readFileSync(`/proc/${newPid}/fdinfo/${newFd}`, 'utf8');
        fdinfoOk = parseLocks(info.split('\n').filter((x) => x.startsWith('lock:')).join('\n')).some((p) => p.kind === procKind(l.kind) && p.type === l.type);
      }
      proofs.push({
        what: `${path.basename(file)} ${l.kind} ${l.type}`, how: l.kind === 'POSIX' ? '/proc/locks owner' : `/proc/locks + /proc/${newPid}/fdinfo/${newFd}`,
        ok: owner && fdinfoOk, detail: owner && fdinfoOk ? (l.kind === 'OFD' ? `held on new fd ${newFd}` : `owner pid ${newPid}`) : 'NOT held by the new workload',
      });
      const c = contender(l, file);
      proofs.push({ what: `${path.basename(file)} ${l.kind} ${l.type}`, how: c.how, ok: c.refused, detail: c.refused ? `refused (${c.detail})` : c.detail });
    }
    const db = path.join(volume, 'app.db');
    const s = sqliteContender(db);
    proofs.push({ what: 'app.db (SQLite)', how: s.how, ok: s.refused, detail: s.detail });

    // the report
    out('\nWhat moved:');
    out(table([
      ['FILE', 'KIND', 'TYPE', 'RANGE', 'OLD HOLDER', 'NEW HOLDER'],
      ...moved.map((m) => [path.basename(m.path), m.kind, m.type, `${m.start}-${m.end}`, `pid ${oldPid} fd ${m.fd}`, `pid ${newPid}${m.newFd !== null ? ` fd ${m.newFd}` : ''}`]),
    ]).join('\n'));
    out('\nProof (each lock checked by the kernel and by an independent contender):');
    out(table([['LOCK', 'CHECKED WITH', 'RESULT'], ...proofs.map((p) => [p.what, p.how, `${p.ok ? 'OK  ' : 'FAIL'} ${p.detail}`])]).join('\n'));
    const shimRestoreMs = typeof shimLine?.restoreMs === 'number' ? shimLine.restoreMs : null;
    const shimStartMs = typeof shimLine?.sinceStartMs === 'number' ? shimLine.sinceStartMs : null;
    out('\nHow long each step took:');
    out(table([
      ['STEP', 'TIME', ''],
      ['dump (read /proc, write images)', fmtMs(dumpMs), ''],
      ['stop the old workload', fmtMs(stopMs), ''],
      ['restore until locks held', fmtMs(restoreMs), shimRestoreMs !== null ? `reopen + re-lock inside the shim: ${fmtMs(shimRestoreMs)}; the rest is process start (Node.js, python3)` : ''],
      ['locks free between stop and held', fmtMs(windowMs), 'same-node handover (lockmig handover) closes this window for OFD/flock'],
    ]).join('\n'));
    const failed = proofs.filter((p) => !p.ok);
    out(failed.length === 0
      ? `\nAll ${ckpt.locks.length} locks are held by the new workload (pid ${newPid}); nobody else could take them.`
      : `\n${failed.length} check(s) FAILED: ${failed.map((f) => `${f.what} (${f.how})`).join('; ')}`);
    if (opts.pause) await opts.pause(newPid);
    if (opts.keep) out(`kept: volume ${volume}, images ${imageDir}; the new workload was stopped.`);
    return { oldPid, newPid, volume, tmpfs, locks: moved, proofs, timings: { dumpMs, stopMs, restoreMs, shimRestoreMs, shimStartMs, windowMs } };
  } finally {
    for (const c of cleanup.reverse()) { try { c(); } catch { /* best effort */ } }
  }
}

/** What to tell a user who is not root. */
export const NOT_ROOT_HELP = `lockmig demo needs root: it creates mount and pid namespaces (unshare), mounts a tmpfs,
and reads other processes' /proc/<pid>/fdinfo to see their locks.

Run it as root, for example:
  sudo npm run demo
or, from a built checkout:
  sudo node dist/src/cli/main.js demo

Nothing outside a temporary directory under ${os.tmpdir()} is touched, and everything is removed afterwards.`;
