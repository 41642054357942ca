/**
 * Local stand-ins for pods: real processes in cgroups named exactly the way the kubelet names
 * them (under the real cgroup2 mount, found in /proc/mounts), holding real locks, plus
 * independent contenders (flock(1), python3 fcntl, the sqlite3 CLI) and /proc/locks readers.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { findCgroupMounts, kubeletCgroupPath, type CgroupDriver, type QosClass } from '../../../src/proc/cgroup.js';

export const HOLDER = fileURLToPath(new URL('./holder.py', import.meta.url));

/** A set of kubelet-named cgroups under a private prefix; `cleanup` kills members and removes them. */
export class KubeletCgroups {
  readonly mount: string;
  readonly prefix: string;
  private readonly made: string[] = [];
  private readonly kids: ChildProcess[] = [];

  constructor(tag: string) {
    const m = findCgroupMounts().cgroup2;
    if (!m) throw new Error('no cgroup2 mount in /proc/self/mounts');
    this.mount = m;
    this.prefix = `lockmig-${tag}-${process.pid}`;
  }

  /** Create (mkdir -p) the cgroup of one container; returns its directory. */
  container(o: { podUID: string; containerID: string; driver?: CgroupDriver; qos?: QosClass }): string {
    const rel = kubeletCgroupPath({ driver: o.driver ?? 'systemd', qos: o.qos ?? 'Burstable', podUID: o.podUID, containerID: o.containerID, runtime: 'containerd' });
    let cur = this.mount;
    for (const seg of `${this.prefix}${rel}`.split('/').filter(Boolean)) {
      cur = path.join(cur, seg);
      if (!fs.existsSync(cur)) { fs.mkdirSync(cur); this.made.push(cur); }
    }
    return cur;
  }

  /**
   * Start `argv` inside cgroup `dir` from its first instruction (a shell moves itself in, then
   * execs), and wait for its first stdout line.
   */
  async start(dir: string, argv: readonly string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 20_000): Promise<{ child: ChildProcess; pid: number; line: string; stderr: () => string }> {
    const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.kids.push(child);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`${argv.join(' ')}: no output within ${timeoutMs} ms; stderr: ${err}`)), timeoutMs);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const nl = out.indexOf('\n');
        if (nl >= 0) { clearTimeout(timer); resolve(out.slice(0, nl)); }
      });
      child.once('exit', (code, sig) => { clearTimeout(timer); reject(new Error(`${argv.join(' ')} exited (${code ?? sig}) before reporting; stderr: ${err}`)); });
    });
    return { child, pid: child.pid!, line, stderr: () => err };
  }

  async cleanup(): Promise<void> {
    for (const k of this.kids) if (k.exitCode === null && k.signalCode === null) k.kill('SIGKILL');
    await Promise.all(this.kids.map((k) => (k.exitCode !== null || k.signalCode !== null ? undefined : new Promise((r) => k.once('exit', r)))));
    for (const dir of [...this.made].reverse()) {
      for (let i = 0; i < 100; i++) {
        try { fs.rmdirSync(dir); break; } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') break;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
  }
}

export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await done;
}

/** /proc/locks lines (not blocked waiters) whose inode is `ino`. */
export function procLocksFor(ino: number | bigint): Array<{ kind: string; type: string; pid: number; start: string; end: string }> {
  const out = [];
  for (const line of fs.readFileSync('/proc/locks', 'utf8').split('\n')) {
    if (!line || line.includes('->')) continue;
    const f = line.trim().split(/\s+/);
    // 1: POSIX  ADVISORY  WRITE 2163 fe:00:2146453 0 EOF
    const fileInode = f[5]!.split(':')[2];
    if (fileInode !== String(ino)) continue;
    out.push({ kind: f[1]!, type: f[3]!, pid: Number(f[4]), start: f[6]!, end: f[7]! });
  }
  return out;
}

export const inode = (p: string) => fs.statSync(p).ino;

/** flock(1) -n: true when the lock is free (and it was taken and released), false when busy. */
export function flockFree(file: string): boolean {
  const r = spawnSync('flock', ['-n', '-E', '99', file, 'true'], { encoding: 'utf8' });
  if (r.status !== 0 && r.status !== 99) throw new Error(`flock failed: ${r.stderr}`);
  return r.status === 0;
}

/** python3 fcntl: can a new description take an OFD (or POSIX with kind 'posix') write lock? */
export function fcntlFree(file: string, kind: 'posix' | 'ofd'): boolean {
  const code = kind === 'posix'
    ? 'import fcntl,os,sys\nfd=os.open(sys.argv[1],os.O_RDWR)\ntry:\n fcntl.lockf(fd,fcntl.LOCK_EX|fcntl.LOCK_NB)\nexcept OSError:\n sys.exit(99)'
    : 'import fcntl,os,sys,struct\nfd=os.open(sys.argv[1],os.O_RDWR)\ntry:\n fcntl.fcntl(fd,37,struct.pack("hhqqi4x",fcntl.F_WRLCK,0,0,0,0))\nexcept OSError:\n sys.exit(99)';
  const r = spawnSync('python3', ['-c', code, file], { encoding: 'utf8' });
  if (r.status !== 0 && r.status !== 99) throw new Error(`python3 contender failed: ${r.stderr}`);
  return r.status === 0;
}

/** The sqlite3 CLI reading the database: 'locked' when it says "database is locked". */
export function sqliteState(db: string): 'locked' | 'free' {
  const r = spawnSync('sqlite3', ['-cmd', '.timeout 0', db, 'SELECT count(*) FROM t;'], { encoding: 'utf8' });
  if (/database is locked/.test(r.stderr + r.stdout)) return 'locked';
  if (r.status !== 0) throw new Error(`sqlite3 failed: ${r.stderr}`);
  return 'free';
}
