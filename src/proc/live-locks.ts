/**
 * A live snapshot of who holds which lock and who waits for it, for a set of processes (or every
 * process on the host): the data behind `kubectl lockmig locks` and the agent's lock metrics.
 *
 * Held locks come from the `lock:` lines of /proc/<pid>/fdinfo/<fd> (src/proc/fdinfo.ts), which
 * name the fd (and so the file as the process sees it: the /proc/<pid>/fd/<fd> link). Waiters
 * exist only in /proc/locks, as `->` lines under the lock they queue behind:
 *
 *   9: POSIX  ADVISORY  WRITE 31093 fe:00:2146336 0 EOF          held by pid 31093
 *   9: -> POSIX  ADVISORY  WRITE 31167 fe:00:2146336 0 EOF       31167 waits for it (F_SETLKW)
 *   9:  -> OFDLCK ADVISORY  WRITE -1 fe:00:2146336 0 EOF         an OFD waiter queued behind 31167
 *
 * The indentation is the depth (fs/locks.c locks_show prints the blocked tree recursively): a
 * waiter at depth d is queued behind the nearest line above it at depth d-1, and the lock at
 * depth 0 is what the whole chain waits for. /proc/locks names no fd, and no pid for an OFD
 * waiter (-1): a blocked waiter sits in fcntl(F_SETLKW/F_OFD_SETLKW) or flock(2), which
 * /proc/<pid>/task/<tid>/syscall shows with its fd argument, so waiters are matched to their
 * process and fd that way (the fd's file checked by inode); what cannot be matched keeps pid
 * and fd unknown and is shown by its holder's path.
 *
 * Kernel layer: no Kubernetes imports. Cost: one native read of each process's fdinfo files
 * (ProcDir.readFdinfoBlock: unlocked fds are skipped without making a string), one readlink per
 * locked fd, one read of /proc/locks, and per-thread syscall reads only when there are waiters.
 */
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { posix } from 'node:path';
import { ProcDir } from '../sys/procdir.js';
import { SyscallError } from '../sys/errors.js';
import { parseLockLine, type DevIno, type ProcLock, type ProcLockMode, type ProcLockType } from './lockline.js';
import { parseFdinfo } from './fdinfo.js';
import { listFds } from './fds.js';
import { parseMountinfo } from './mountinfo.js';
import { ProcParseError } from './errors.js';

/** The lock kinds as users know them (the kernel says OFDLCK; leases and delegations are LEASE). */
export type LiveLockKind = 'POSIX' | 'OFD' | 'FLOCK' | 'LEASE';

const KIND_OF: Readonly<Record<string, LiveLockKind | undefined>> = { POSIX: 'POSIX', OFDLCK: 'OFD', FLOCK: 'FLOCK', LEASE: 'LEASE', DELEG: 'LEASE' };

export interface LiveLock {
  readonly kind: LiveLockKind;
  readonly type: ProcLockType;
  readonly mode: ProcLockMode;
  readonly start: bigint;
  /** inclusive end, or 'EOF' */
  readonly end: bigint | 'EOF';
  /** host pid of the process whose fd shows the lock (the owner, for POSIX) */
  readonly pid: number;
  /** the lowest fd of `pid` that shows it */
  readonly fd: number;
  /** every fd of `pid` showing this same lock (dup'd descriptors of one description), ascending */
  readonly fds: readonly number[];
  /** device and inode, as /proc/locks prints them */
  readonly file: DevIno | null;
  /** `maj:min:ino` exactly as /proc/locks writes it (hex:hex:decimal): grep-able there */
  readonly fileKey: string;
  /** the /proc/<pid>/fd/<fd> link: the path as the process sees it (" (deleted)" kept); null if unreadable */
  readonly path: string | null;
}

/** A lock line of /proc/locks that a waiter queues behind. */
export interface LockRef {
  readonly kind: LiveLockKind;
  readonly type: ProcLockType;
  readonly start: bigint;
  readonly end: bigint | 'EOF';
  /** as /proc/locks shows it: -1 for OFD locks, 0 when not visible */
  readonly pid: number;
  readonly fileKey: string;
  /** indices into LockSnapshot.locks of the held locks this line is (empty: outside the scanned processes, or itself a waiter) */
  readonly locks: readonly number[];
  /** for a waiter queued behind another waiter: that waiter's index in LockSnapshot.waiters */
  readonly waiter?: number;
}

export interface LiveWaiter {
  readonly kind: LiveLockKind;
  readonly type: ProcLockType;
  readonly start: bigint;
  readonly end: bigint | 'EOF';
  /** host pid of the waiting process; null when unknown (an OFD waiter not found in any scanned thread) */
  readonly pid: number | null;
  /** the blocked thread, when found through /proc/<pid>/task/<tid>/syscall */
  readonly tid?: number;
  /** the fd it waits on; null when unknown */
  readonly fd: number | null;
  readonly file: DevIno | null;
  readonly fileKey: string;
  /** the waiter's own fd link when its fd is known, else the path of the lock it waits for, else null */
  readonly path: string | null;
  /** where `path` came from */
  readonly pathFrom: 'fd' | 'holder' | 'none';
  /** 1: queued directly behind the held lock; 2+: behind another waiter */
  readonly depth: number;
  /** the line it is queued behind (the holder at depth 1, another waiter deeper) */
  readonly blockedBy: LockRef;
  /** the held lock at the head of its chain: what it is really waiting for */
  readonly holder: LockRef;
}

/**
 * An fd of a scanned process on a file someone holds a lock on, with no lock of its own on that
 * file and not blocked on it: a reader between transactions, or a program that polls for the lock
 * (SQLite's busy handler retries F_SETLK and sleeps: the kernel lists no waiter for it).
 */
export interface OpenFd {
  readonly pid: number;
  readonly fd: number;
  readonly file: DevIno;
  readonly fileKey: string;
  readonly path: string | null;
}

export interface LockSnapshot {
  /** ISO time of the snapshot */
  readonly takenAt: string;
  readonly locks: readonly LiveLock[];
  /** fds open on a locked file without a lock or a wait of their own (found with liblockmig only) */
  readonly opens: readonly OpenFd[];
  /** waiters whose process is one of the scanned ones, or whose holder is (or whose pid is unknown) */
  readonly waiters: readonly LiveWaiter[];
  readonly stats: { readonly processes: number; readonly fds: number; readonly lockedFds: number; readonly ms: number };
}

export interface SnapshotOptions {
  /** host pids to scan; default: every process in /proc */
  readonly pids?: readonly number[];
  /** /proc/locks text to use instead of reading it (tests) */
  readonly procLocksText?: string;
}

const hex2 = (n: number): string => n.toString(16).padStart(2, '0');

/** `fe:00:2146336`, the way /proc/locks prints a file. */
export function fileKeyOf(f: DevIno | null): string {
  return f ? `${hex2(f.major)}:${hex2(f.minor)}:${f.ino}` : '<none>';
}

/** One /proc/locks line with its place in the blocked tree. */
export interface ProcLocksEntry {
  readonly lock: ProcLock;
  /** 0 for a held lock, d for a waiter d levels below it */
  readonly depth: number;
  /** index (in the returned list) of the line it queues behind; -1 for a held lock */
  readonly parent: number;
  /** index of the held lock at the head of its chain (itself for a held lock) */
  readonly root: number;
}

const WAITER_RE = /^\s*\d+:( +)->/;

/**
 * /proc/locks with the blocked tree kept (src/proc/locks.ts drops waiters): each `->` line's
 * depth is the number of spaces between `N:` and `->`.
 */
export function parseProcLocksTree(text: string, source = '/proc/locks'): ProcLocksEntry[] {
  const out: ProcLocksEntry[] = [];
  /** stack[d] = index of the last line seen at depth d */
  const stack: number[] = [];
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!;
    if (line.trim() === '') continue;
    const lock = parseLockLine(line, source, n + 1);
    let depth = 0;
    if (lock.blocked) {
      const m = WAITER_RE.exec(line);
      depth = m ? m[1]!.length : 1;
      if (stack.length < depth) throw new ProcParseError(source, n + 1, line, `a waiter at depth ${depth} with no lock above it at depth ${depth - 1}`);
    }
    const parent = depth === 0 ? -1 : stack[depth - 1]!;
    const root = depth === 0 ? out.length : out[stack[0]!]!.root;
    stack.length = depth;
    stack.push(out.length);
    out.push({ lock, depth, parent, root });
  }
  return out;
}

function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH';
}

function allPids(): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    const c = e.charCodeAt(0);
    if (c >= 48 && c <= 57) out.push(parseInt(e, 10));
  }
  return out.sort((a, b) => a - b);
}

function openDir(dir: string): ProcDir | null {
  try {
    return new ProcDir(dir);
  } catch (err) {
    if (err instanceof SyscallError && (err.code === 'ENOENT' || err.code === 'ESRCH' || err.code === 'EACCES')) return null;
    throw err;
  }
}

function readOrNull(p: string): string | null {
  try { return readFileSync(p, 'latin1'); } catch { return null; }
}

/** Syscall numbers of fcntl and flock per architecture (asm/unistd). */
const SYSCALLS: Readonly<Record<string, { fcntl: number; flock: number }>> = {
  x64: { fcntl: 72, flock: 73 },
  arm64: { fcntl: 25, flock: 32 },
  riscv64: { fcntl: 25, flock: 32 },
  loong64: { fcntl: 25, flock: 32 },
};
const F_SETLKW = 7;
const F_OFD_SETLKW = 38;
const LOCK_NB = 4;

/** A thread blocked in a lock call, from /proc/<pid>/task/<tid>/syscall. */
interface BlockedCall {
  readonly pid: number;
  readonly tid: number;
  readonly fd: number;
  readonly kind: LiveLockKind;
  /** the fd's file, from its fdinfo (mnt_id → the superblock's device) */
  readonly fileKey: string;
  used: boolean;
}

/** `72 0x3 0x7 0x7ffc… …`: the syscall number and its arguments, or null (running, not blocked, unreadable). */
export function parseSyscallLine(text: string): { nr: number; args: bigint[] } | null {
  const f = text.trim().split(' ');
  if (f.length < 3 || !/^\d+$/.test(f[0]!)) return null;
  try {
    return { nr: parseInt(f[0]!, 10), args: f.slice(1, 7).map((a) => BigInt(a)) };
  } catch {
    return null;
  }
}

/** The lock calls the threads of `pid` are blocked in. */
function blockedCalls(pid: number, nrs: { fcntl: number; flock: number }): BlockedCall[] {
  let tids: string[];
  try { tids = readdirSync(`/proc/${pid}/task`); } catch { return []; }
  const out: BlockedCall[] = [];
  let mounts: ReturnType<typeof parseMountinfo> | null = null;
  for (const t of tids) {
    const sc = parseSyscallLine(readOrNull(`/proc/${pid}/task/${t}/syscall`) ?? '');
    if (!sc) continue;
    let kind: LiveLockKind | null = null;
    const cmd = sc.args[1]!;
    if (sc.nr === nrs.fcntl && cmd === BigInt(F_SETLKW)) kind = 'POSIX';
    else if (sc.nr === nrs.fcntl && cmd === BigInt(F_OFD_SETLKW)) kind = 'OFD';
    else if (sc.nr === nrs.flock && (cmd & BigInt(LOCK_NB)) === 0n) kind = 'FLOCK';
    if (!kind) continue;
    const fd = Number(sc.args[0]! & 0xffffffffn);
    const infoText = readOrNull(`/proc/${pid}/fdinfo/${fd}`);
    if (infoText === null) continue;
    let fileKey = '<none>';
    try {
      const info = parseFdinfo(infoText, `/proc/${pid}/fdinfo/${fd}`);
      if (mounts === null) mounts = parseMountinfo(readOrNull(`/proc/${pid}/mountinfo`) ?? '', `/proc/${pid}/mountinfo`);
      const m = mounts.get(info.mntId);
      if (m && info.ino !== null) fileKey = fileKeyOf({ major: m.major, minor: m.minor, ino: info.ino });
    } catch {
      continue;
    }
    out.push({ pid, tid: parseInt(t, 10), fd, kind, fileKey, used: false });
  }
  return out;
}

/**
 * The path of an fd as its process can reach it. A description opened in another mount namespace
 * (handed over from a pod that is gone) shows a path below that namespace's mount, which this
 * process does not have: the kernel prints it relative to the mount's root ("/app.db" for the
 * source's "/data/app.db"). The same file is then looked for below each of the process's own
 * mounts of that filesystem, and accepted only if it is the very inode. Else the kernel's text.
 */
export function visiblePath(pid: number, link: string, mntId: number, ino: bigint | null, file: DevIno | null | undefined, mounts: ReturnType<typeof parseMountinfo>): string {
  if (mounts.has(mntId) || ino === null || !file || !link.startsWith('/')) return link;
  for (const m of mounts.values()) {
    if (m.major !== file.major || m.minor !== file.minor) continue;
    const candidate = posix.join(m.mountPoint, link);
    try {
      if (statSync(`/proc/${pid}/root${candidate}`, { bigint: true }).ino === ino) return candidate;
    } catch { /* not there */ }
  }
  return link;
}

/**
 * The snapshot. Processes that exit or close fds meanwhile are skipped silently (a live system);
 * malformed /proc text throws ProcParseError.
 */
export function snapshotLocks(opts: SnapshotOptions = {}): LockSnapshot {
  const t0 = performance.now();
  const pids = opts.pids ? [...new Set(opts.pids)].sort((a, b) => a - b) : allPids();
  const locks: LiveLock[] = [];
  /** per process, the plain (unlocked) fds liblockmig parsed: names and [plain, mnt_id, ino lo, ino hi] */
  const plainOf: { pid: number; names: readonly number[]; plain: Int32Array }[] = [];
  let fdCount = 0;
  let lockedFds = 0;
  let processes = 0;
  for (const pid of pids) {
    let fds: number[];
    try { fds = listFds(pid); } catch (err) { if (isGone(err) || (err as NodeJS.ErrnoException).code === 'EACCES') continue; throw err; }
    processes++;
    if (fds.length === 0) continue;
    fdCount += fds.length;
    const dir = openDir(`/proc/${pid}/fdinfo`);
    if (!dir) continue;
    const locked: { fd: number; lines: ProcLock[]; mntId: number; ino: bigint | null }[] = [];
    try {
      const block = dir.readFdinfoBlock(fds);
      const plain = block.plain;
      if (plain) plainOf.push({ pid, names: block.names, plain });
      for (let i = 0; i < block.names.length; i++) {
        if (plain && plain[4 * i] === 1) continue;
        const text = block.text(i);
        if (text === null || !text.includes('\nlock:')) continue;
        const fd = block.names[i]!;
        const info = parseFdinfo(text, `/proc/${pid}/fdinfo/${fd}`);
        if (info.locks.length > 0) locked.push({ fd, lines: [...info.locks], mntId: info.mntId, ino: info.ino });
      }
    } finally {
      dir.close();
    }
    if (locked.length === 0) continue;
    lockedFds += locked.length;
    const fdDir = openDir(`/proc/${pid}/fd`);
    const links = fdDir ? (() => { try { return fdDir.readLinks(locked.map((l) => l.fd)); } finally { fdDir.close(); } })() : [];
    // one row per distinct lock of this process; a lock shown on several fds (dup) lists them all
    const seen = new Map<string, { row: number; fds: number[] }>();
    let mounts: ReturnType<typeof parseMountinfo> | null = null;
    locked.forEach((l, i) => {
      const raw = links[i];
      let path = raw ? raw.toString('utf8') : null;
      if (path !== null && l.lines[0]) {
        mounts ??= parseMountinfo(readOrNull(`/proc/${pid}/mountinfo`) ?? '', `/proc/${pid}/mountinfo`);
        path = visiblePath(pid, path, l.mntId, l.ino, l.lines[0].file, mounts);
      }
      for (const pl of l.lines) {
        const kind = KIND_OF[pl.kind];
        if (!kind) continue;
        const fileKey = fileKeyOf(pl.file);
        const key = `${kind} ${pl.type} ${pl.start} ${pl.end} ${fileKey}`;
        const prev = seen.get(key);
        if (prev) { prev.fds.push(l.fd); continue; }
        const fdsOf = [l.fd];
        seen.set(key, { row: locks.length, fds: fdsOf });
        locks.push({ kind, type: pl.type, mode: pl.mode, start: pl.start, end: pl.end, pid, fd: l.fd, fds: fdsOf, file: pl.file, fileKey, path });
      }
    });
  }

  // waiters
  const entries = parseProcLocksTree(opts.procLocksText ?? readFileSync('/proc/locks', 'latin1'));
  const waiters: LiveWaiter[] = [];
  if (entries.some((e) => e.depth > 0)) {
    const scoped = new Set(pids);
    const all = opts.pids === undefined;
    const byFile = new Map<string, number[]>();
    locks.forEach((l, i) => { const a = byFile.get(l.fileKey); if (a) a.push(i); else byFile.set(l.fileKey, [i]); });
    const matchHeld = (pl: ProcLock): number[] => {
      const kind = KIND_OF[pl.kind];
      return (byFile.get(fileKeyOf(pl.file)) ?? []).filter((i) => {
        const l = locks[i]!;
        return l.kind === kind && l.type === pl.type && l.start === pl.start && l.end === pl.end && (pl.pid <= 0 || l.pid === pl.pid);
      });
    };
    const nrs = SYSCALLS[process.arch];
    const calls = new Map<number, BlockedCall[]>();
    const callsOf = (pid: number): BlockedCall[] => {
      let c = calls.get(pid);
      if (!c) { c = nrs ? blockedCalls(pid, nrs) : []; calls.set(pid, c); }
      return c;
    };
    const waiterIndex = new Map<number, number>(); // entry index → waiters index
    const refOf = (ei: number): LockRef => {
      const e = entries[ei]!;
      const l = e.lock;
      const w = waiterIndex.get(ei);
      return {
        kind: KIND_OF[l.kind] ?? 'LEASE', type: l.type, start: l.start, end: l.end, pid: l.pid, fileKey: fileKeyOf(l.file),
        locks: e.depth === 0 ? matchHeld(l) : [], ...(w !== undefined ? { waiter: w } : {}),
      };
    };
    entries.forEach((e, ei) => {
      if (e.depth === 0) return;
      const l = e.lock;
      const kind = KIND_OF[l.kind];
      if (!kind) return;
      const fileKey = fileKeyOf(l.file);
      const holder = refOf(e.root);
      // a waiter of another process on a lock of another process: not ours to look at
      if (!all && l.pid > 0 && !scoped.has(l.pid) && holder.locks.length === 0) return;
      // which process: the line's pid (POSIX, FLOCK), or the blocked threads of the scanned processes (OFD: -1)
      let call: BlockedCall | undefined;
      const candidates = l.pid > 0 ? [l.pid] : pids;
      if (l.pid > 0 || !all) {
        for (const p of candidates) {
          call = callsOf(p).find((c) => !c.used && c.kind === kind && c.fileKey === fileKey);
          if (call) break;
        }
      }
      const pid = call?.pid ?? (l.pid > 0 ? l.pid : null);
      const inScope = (pid !== null && scoped.has(pid)) || holder.locks.length > 0 || pid === null;
      if (!all && !inScope) return;
      if (call) call.used = true;
      let path: string | null = null;
      let pathFrom: LiveWaiter['pathFrom'] = 'none';
      if (call) {
        try { path = readlinkSync(`/proc/${call.pid}/fd/${call.fd}`); pathFrom = 'fd'; } catch { /* closed meanwhile */ }
      }
      if (path === null && holder.locks.length > 0) { path = locks[holder.locks[0]!]!.path; pathFrom = path === null ? 'none' : 'holder'; }
      waiterIndex.set(ei, waiters.length);
      waiters.push({
        kind, type: l.type, start: l.start, end: l.end, pid, ...(call ? { tid: call.tid } : {}), fd: call?.fd ?? null,
        file: l.file, fileKey, path, pathFrom, depth: e.depth, blockedBy: refOf(e.parent), holder,
      });
    });
  }
  const opens = openFdsOnLockedFiles(plainOf, locks, waiters);
  return {
    takenAt: new Date().toISOString(), locks, waiters, opens,
    stats: { processes, fds: fdCount, lockedFds, ms: Math.round((performance.now() - t0) * 10) / 10 },
  };
}

/** The snapshot as JSON-safe data: offsets as decimal strings. */
export function snapshotToJson(s: LockSnapshot): unknown {
  return JSON.parse(JSON.stringify(s, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)));
}

/** `0-EOF`, `100-199`: an inclusive range the way lslocks prints START and END. */
export function formatLiveRange(start: bigint | string, end: bigint | string): string {
  return `${start}-${end}`;
}

/** The plain fds (no lock line) on a file with a held lock, minus the fds of waiters and of processes holding a lock on that file. */
function openFdsOnLockedFiles(plainOf: readonly { pid: number; names: readonly number[]; plain: Int32Array }[], locks: readonly LiveLock[], waiters: readonly LiveWaiter[]): OpenFd[] {
  if (locks.length === 0) return [];
  const lockedInos = new Set<string>();
  const keys = new Set<string>();
  const holds = new Set<string>();
  for (const l of locks) {
    if (!l.file) continue;
    lockedInos.add(String(l.file.ino));
    keys.add(l.fileKey);
    holds.add(`${l.pid} ${l.fileKey}`);
  }
  const waiting = new Set(waiters.filter((w) => w.pid !== null && w.fd !== null).map((w) => `${w.pid} ${w.fd}`));
  const out: OpenFd[] = [];
  for (const { pid, names, plain } of plainOf) {
    let mounts: ReturnType<typeof parseMountinfo> | null = null;
    const hits: { fd: number; file: DevIno; fileKey: string }[] = [];
    for (let i = 0; i < names.length; i++) {
      if (plain[4 * i] !== 1) continue;
      const ino = (BigInt(plain[4 * i + 3]! >>> 0) << 32n) | BigInt(plain[4 * i + 2]! >>> 0);
      if (!lockedInos.has(String(ino))) continue;
      if (mounts === null) {
        try { mounts = parseMountinfo(readFileSync(`/proc/${pid}/mountinfo`, 'latin1'), `/proc/${pid}/mountinfo`); } catch { break; }
      }
      const m = mounts.get(plain[4 * i + 1]!);
      if (!m) continue;
      const file = { major: m.major, minor: m.minor, ino };
      const fileKey = fileKeyOf(file);
      if (!keys.has(fileKey) || holds.has(`${pid} ${fileKey}`) || waiting.has(`${pid} ${names[i]}`)) continue;
      hits.push({ fd: names[i]!, file, fileKey });
    }
    for (const h of hits) {
      let path: string | null = null;
      try { path = readlinkSync(`/proc/${pid}/fd/${h.fd}`); } catch { continue; }
      out.push({ pid, ...h, path });
    }
  }
  return out;
}
