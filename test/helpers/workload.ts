/**
 * Workloads and witnesses for restore round trips.
 *
 * - the SOURCE workload is a python3 process tree that takes locks as a JSON script says
 *   (the holder shared with the dump tests, re-exported here);
 * - the RESTORED application is another independent program, started through the real CLI:
 *   `node dist/src/cli/main.js restore --image DIR … -- python3 APP`, which prints one JSON
 *   line (its pid, its LOCKMIG_FDS, its own view of each fd) and waits to be killed. execve
 *   keeps the pid, so the spawned child's pid is the restored process;
 * - witnesses nobody here wrote: /proc/<pid>/fdinfo, /proc/locks, `lslocks --json`, and
 *   contenders (`flock -n`, python3 fcntl F_OFD_SETLK / F_SETLK, the sqlite3 CLI).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { createInterface } from 'node:readline';
import { CLI } from './env.js';
import { PYTHON } from '../proc/holder.js';

export { startHolder, PYTHON, type Holder, type HolderAction, type HolderProc } from '../proc/holder.js';

/** The restored application: reports what it inherited, echoes a marker on stdout, then waits. */
export const APP_SCRIPT = String.raw`
import os, sys, json, signal
fds = os.environ.get('LOCKMIG_FDS', '')
view = {}
for e in filter(None, fds.split(';')):
    fd = int(e.split(':')[0])
    try:
        view[fd] = os.readlink('/proc/self/fd/%d' % fd)
    except OSError as ex:
        view[fd] = 'ERROR ' + str(ex)
print(json.dumps({'pid': os.getpid(), 'fds': fds, 'view': view, 'version': os.environ.get('LOCKMIG_FDS_VERSION')}), flush=True)
while True:
    signal.pause()
`;

export interface Restored {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly report: { pid: number; fds: string; view: Record<string, string>; version: string | null };
  stderr(): string;
  kill(): void;
}

export interface RestoreRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function restoreArgs(image: string, opts: { root?: string; allow?: readonly string[]; timeoutS?: number; pids?: readonly number[] } = {}): string[] {
  const a = ['restore', '--image', image];
  if (opts.root) a.push('--root', opts.root);
  for (const p of opts.allow ?? []) a.push('--allow', p);
  if (opts.timeoutS !== undefined) a.push('--timeout', String(opts.timeoutS));
  for (const p of opts.pids ?? []) a.push('--pid', String(p));
  return a;
}

/**
 * Start the restore shim with the python app; resolves once the app reported (locks are
 * held by then), rejects with the shim's stderr if it exits first.
 */
export async function startRestored(image: string, opts: Parameters<typeof restoreArgs>[1] & { env?: NodeJS.ProcessEnv; wrap?: readonly string[]; onStderr?: (all: string) => void } = {}): Promise<Restored> {
  const argv = [...(opts.wrap ?? []), process.execPath, CLI, ...restoreArgs(image, opts), '--', PYTHON, '-c', APP_SCRIPT];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); opts.onStderr?.(stderr); });
  const rl = createInterface({ input: child.stdout! });
  const kill = () => { child.kill('SIGKILL'); };
  const report = await new Promise<Restored['report']>((resolve, reject) => {
    const timer = setTimeout(() => { kill(); reject(new Error(`restored app did not report within 20 s; stderr: ${stderr}`)); }, 20_000);
    rl.once('line', (line) => { clearTimeout(timer); try { resolve(JSON.parse(line)); } catch (e) { reject(e); } });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`restore exited with ${code} before the app reported; stderr: ${stderr}`)); });
  });
  child.removeAllListeners('exit');
  return { child, pid: report.pid, report, stderr: () => stderr, kill };
}

/** Run the restore CLI to completion (for refusals, timeouts, commands that exit). */
export function runRestore(image: string, cmd: readonly string[], opts: Parameters<typeof restoreArgs>[1] & { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): RestoreRun {
  const r = spawnSync(process.execPath, [CLI, ...restoreArgs(image, opts), '--', ...cmd], {
    encoding: 'utf8', env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export interface KernelLock { kind: string; type: string; pid: number; ino: bigint; start: bigint; end: bigint | 'EOF' }

const LOCK_RE = /^(?:lock:\s+)?\d+:\s+(\S+)\s+\S+\s+(\S+)\s+(-?\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s+(\d+)\s+(\d+|EOF)\s*$/;
function parseLockLine(line: string): KernelLock | null {
  if (line.includes('->')) return null;
  const m = LOCK_RE.exec(line.trim());
  if (!m) return null;
  return { kind: m[1]!, type: m[2]!, pid: Number(m[3]), ino: BigInt(m[4]!), start: BigInt(m[5]!), end: m[6] === 'EOF' ? 'EOF' : BigInt(m[6]!) };
}

/** Witness 1: the lock: lines of /proc/<pid>/fdinfo/<fd>. */
export function fdinfoLocks(pid: number, fd: number): KernelLock[] {
  const text = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
  return text.split('\n').filter((l) => l.startsWith('lock:')).map(parseLockLine).filter((x): x is KernelLock => x !== null);
}

/** The file behind /proc/<pid>/fd/<fd>, as that process sees it. */
export function fdTarget(pid: number, fd: number): string {
  return fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
}

/** Witness 2: /proc/locks entries for one inode. */
export function procLocks(ino: bigint): KernelLock[] {
  return fs.readFileSync('/proc/locks', 'utf8').split('\n').map(parseLockLine).filter((x): x is KernelLock => x !== null && x.ino === ino);
}

export function inoOf(p: string): bigint {
  return fs.statSync(p, { bigint: true }).ino;
}

export interface LslocksEntry { command: string; pid: number; type: string; mode: string; start: number; end: number; path: string }
/** Witness 2b: lslocks --json (util-linux). OFD locks show pid -1 and no path on util-linux < 2.39. */
export function lslocks(): LslocksEntry[] {
  const r = spawnSync('lslocks', ['--json', '--bytes', '-o', 'COMMAND,PID,TYPE,MODE,START,END,PATH'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`lslocks failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { locks: LslocksEntry[] }).locks;
}

const CONTEND = String.raw`
import fcntl, os, struct, sys, errno
kind, typ, path, start, length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
fd = os.open(path, os.O_RDWR if typ == 'w' else os.O_RDONLY)
cmd = 37 if kind == 'ofd' else fcntl.F_SETLK
try:
    fcntl.fcntl(fd, cmd, struct.pack('hhqqi', fcntl.F_WRLCK if typ == 'w' else fcntl.F_RDLCK, 0, start, length, 0))
except OSError as e:
    if e.errno in (errno.EAGAIN, errno.EACCES):
        sys.exit(1)
    print(e, file=sys.stderr)
    sys.exit(2)
sys.exit(0)
`;

export type ContendResult = 'acquired' | 'busy';
function verdict(status: number | null, stderr: string, what: string): ContendResult {
  if (status === 0) return 'acquired';
  if (status === 1) return 'busy';
  throw new Error(`${what} failed (${status}): ${stderr}`);
}

/** Witness 3: an independent process tries an fcntl lock (OFD or POSIX) without waiting. */
export function contendFcntl(kind: 'ofd' | 'posix', type: 'r' | 'w', p: string, start = 0n, len = 0n): ContendResult {
  const r = spawnSync(PYTHON, ['-c', CONTEND, kind, type, p, String(start), String(len)], { encoding: 'utf8' });
  return verdict(r.status, r.stderr, `python3 ${kind} contender`);
}

/** Witness 3: util-linux flock(1) -n, shared (-s) or exclusive. */
export function contendFlock(type: 'r' | 'w', p: string): ContendResult {
  const r = spawnSync('flock', ['-n', '-E', '1', ...(type === 'r' ? ['-s'] : ['-x']), p, 'true'], { encoding: 'utf8' });
  return verdict(r.status, r.stderr, 'flock -n');
}

/** Witness 3: the sqlite3 CLI writes to a database; returns its exit status and stderr. */
export function sqliteWrite(db: string, sql = "insert into t values ('contender');"): { status: number | null; stderr: string } {
  const r = spawnSync('sqlite3', ['-cmd', '.timeout 0', db, sql], { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

/** Host pids of every descendant of `pid` (depth first). */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  let kids: string[] = [];
  try { kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean); } catch { /* gone */ }
  for (const k of kids) { out.push(Number(k)); out.push(...descendants(Number(k))); }
  return out;
}

/** Wait (bounded) until a pid has exited, so the kernel has released its locks. */
export async function waitGone(pid: number, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (/\) Z /.test(st)) return; // zombie: files already closed
    } catch { return; }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`pid ${pid} still alive after ${ms} ms`);
}
