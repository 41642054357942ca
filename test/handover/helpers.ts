/**
 * Real processes, namespaces and cgroups for the handover tests. Nothing here is lockmig
 * code under test: holders and contenders are python3 / flock(1) / sh.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Checkpoint, FileRecord, FdRecord, LockRecord, LockKind } from '../../src/image/model.js';
import { REPO_ROOT } from '../helpers/env.js';

export const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
export const DIST = path.join(REPO_ROOT, 'dist');
/** The system python3 (a pyenv shim on PATH costs ~1.5 s per start on a busy machine). */
export const PY = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** The cgroup2 mount point, from /proc/self/mounts (never hard-coded). */
export function cgroup2Mount(): string | undefined {
  for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[2] === 'cgroup2') return f[1];
  }
  return undefined;
}

/** A real cgroup2 cgroup under the mount; remove() kills nothing, it waits for it to empty. */
export class TestCgroup {
  readonly fsPath: string;
  readonly rel: string;
  constructor(name: string) {
    const mnt = cgroup2Mount();
    if (!mnt) throw new Error('no cgroup2 mount in /proc/self/mounts');
    this.rel = `/lockmig-test-${process.pid}-${name}`;
    this.fsPath = path.join(mnt, this.rel);
    fs.mkdirSync(this.fsPath, { recursive: true });
  }
  add(pid: number): void {
    fs.writeFileSync(path.join(this.fsPath, 'cgroup.procs'), `${pid}\n`);
  }
  pids(): number[] {
    return fs.readFileSync(path.join(this.fsPath, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  }
  async remove(): Promise<void> {
    for (const pid of this.pids()) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    for (let i = 0; i < 200; i++) {
      try {
        fs.rmdirSync(this.fsPath);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    fs.rmdirSync(this.fsPath);
  }
}

/** `sh -c 'echo $$ > cgroup.procs; exec "$@"'`: the command starts already inside the cgroup. */
export function inCgroup(cg: TestCgroup | undefined, argv: readonly string[]): string[] {
  if (!cg) return [...argv];
  return ['sh', '-c', `echo $$ > '${cg.fsPath}/cgroup.procs' && exec "$@"`, 'sh', ...argv];
}

export function readLine(child: ChildProcess, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout! });
    const t = setTimeout(() => { rl.close(); reject(new Error(`no output within ${timeoutMs} ms`)); }, timeoutMs);
    rl.once('line', (l) => { clearTimeout(t); rl.close(); resolve(l); });
    child.once('exit', (code) => { clearTimeout(t); rl.close(); reject(new Error(`exited with ${code} before printing`)); });
  });
}

export function childrenOf(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export interface LockSpec {
  readonly path: string;
  readonly fd: number;
  readonly kind: Exclude<LockKind, 'LEASE'>;
  readonly type?: 'READ' | 'WRITE';
  readonly start?: number;
  readonly len?: number;
}

export interface Holder {
  /** the unshare process */
  readonly child: ChildProcess;
  /** host pid of the python workload (inside its own pid+mount namespace) */
  readonly pid: number;
  readonly spec: readonly LockSpec[];
  kill(signal?: NodeJS.Signals): void;
  exited(): Promise<void>;
}

/** A python3 workload in its own mount+pid namespace holding `spec`'s locks. */
export async function startHolder(spec: readonly LockSpec[], cg?: TestCgroup): Promise<Holder> {
  const argv = inCgroup(cg, ['unshare', '--mount', '--pid', '--fork', '--mount-proc', PY, path.join(FIXTURES, 'holder.py'), JSON.stringify(spec)]);
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  const exit = new Promise<void>((r) => child.once('exit', () => r()));
  const line = await readLine(child);
  if (!line.startsWith('ready ')) throw new Error(`holder said ${line}`);
  const kids = childrenOf(child.pid!);
  if (kids.length !== 1) throw new Error(`expected one child of unshare ${child.pid}, got ${kids.join(',')}`);
  const pid = kids[0]!;
  return {
    child, pid, spec,
    kill(signal = 'SIGKILL') { try { process.kill(pid, signal); } catch { /* gone */ } },
    exited: () => exit,
  };
}

/** st_dev split the way the kernel encodes dev_t (new_encode_dev) */
function devOf(p: string): { major: number; minor: number } {
  const d = fs.statSync(p, { bigint: true }).dev;
  return { major: Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn)), minor: Number((d & 0xffn) | ((d >> 12n) & ~0xffn)) };
}

/**
 * The checkpoint a dump of `holder` yields (built from the spec and the kernel's view of
 * the files, so the vault's own verification against fdinfo is what is being tested).
 */
export function checkpointOf(holder: Holder): Checkpoint {
  const files: FileRecord[] = [];
  const fds: FdRecord[] = [];
  const locks: LockRecord[] = [];
  const idOf = new Map<string, number>();
  for (const s of holder.spec) {
    const key = `${s.path}\0${s.fd}`;
    let id = idOf.get(key);
    if (id === undefined) {
      id = files.length + 1;
      idOf.set(key, id);
      const st = fs.statSync(s.path, { bigint: true });
      files.push({
        id, path: s.path, flags: 0o2, pos: 0n, mntId: 0, dev: devOf(s.path), ino: st.ino,
        mountPoint: '/', relPath: s.path.slice(1),
      });
      fds.push({ pid: holder.pid, fd: s.fd, fileId: id, cloexec: false });
    }
    const len = BigInt(s.len ?? 0);
    const start = BigInt(s.start ?? 0);
    locks.push({
      kind: s.kind, type: s.type ?? 'WRITE', start, end: len === 0n ? 'EOF' : start + len - 1n,
      pid: holder.pid, fd: s.fd, fileId: id,
    });
  }
  return {
    formatVersion: 1, createdAt: new Date().toISOString(),
    source: { hostname: os.hostname(), kernel: os.release(), rootPid: holder.pid },
    method: 'fdinfo', processes: [{ pid: holder.pid, ppid: 1, nsPid: 1, comm: 'python3', cgroup: '' }],
    files, fds, locks, skipped: [],
  };
}

/** /proc/locks lines (not waiters) for an inode. */
export function procLocksFor(ino: bigint): string[] {
  return fs.readFileSync('/proc/locks', 'utf8').split('\n')
    .filter((l) => l && !l.includes('->') && l.split(/\s+/)[5]?.endsWith(`:${ino}`));
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `lockmig-${prefix}-`));
}

export interface Contender {
  stop(): Promise<{ attempts: number; wins: number }>;
  /** for cleanup after a failure */
  kill(): void;
}

async function startContender(argv: string[], out: string): Promise<Contender> {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  const exit = new Promise<void>((r) => child.once('exit', () => r()));
  const line = await readLine(child);
  if (line !== 'ready') throw new Error(`contender said ${line}`);
  return {
    kill() { child.kill('SIGKILL'); },
    async stop() {
      child.kill('SIGTERM');
      await exit;
      const [a, w] = fs.readFileSync(out, 'utf8').trim().split(' ').map(Number);
      return { attempts: a!, wins: w! };
    },
  };
}

/** python3 F_OFD_SETLK (or F_SETLK for POSIX) in a loop over the given ranges. */
export function fcntlContender(mode: 'OFD' | 'POSIX', targets: readonly { path: string; start: number; len: number }[], out: string): Promise<Contender> {
  return startContender([PY, path.join(FIXTURES, 'ofd_contender.py'), mode, out, ...targets.map((t) => `${t.path}:${t.start}:${t.len}`)], out);
}

/** flock(1) -n in a shell loop. */
export function flockContender(file: string, out: string): Promise<Contender> {
  return startContender(['sh', path.join(FIXTURES, 'flock_contender.sh'), file, out], out);
}

/** One-shot independent probes. */
export function flockFree(file: string): boolean {
  return spawnSync('flock', ['-n', '-E', '99', file, 'true']).status === 0;
}
export function ofdFree(file: string, start = 0, len = 0): boolean {
  const r = spawnSync(PY, ['-c', `
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.fcntl(fd, getattr(fcntl, "F_OFD_SETLK", 37), struct.pack("hhqqi", fcntl.F_WRLCK, 0, int(sys.argv[2]), int(sys.argv[3]), 0))
except OSError:
    sys.exit(1)
`, file, String(start), String(len)]);
  return r.status === 0;
}

export function runReceiver(sock: string, name: string, mode: 'confirm' | 'noconfirm', cg?: TestCgroup): { child: ChildProcess; result: Promise<Record<string, unknown>> } {
  const argv = inCgroup(cg, [process.execPath, path.join(FIXTURES, 'receiver.mjs'), DIST, sock, name, mode]);
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  return { child, result: readLine(child, 15_000).then((l) => JSON.parse(l) as Record<string, unknown>) };
}
