/**
 * dumpProcesses: read the lock state of a process tree from /proc into a Checkpoint.
 *
 * Pipeline (each step is a function below):
 *  1. processes: the given pids, plus descendants with `tree`.
 *  2. scan: every fd's fdinfo (pos, flags, mnt_id, ino, lock: lines).
 *  3. interesting files: with the fdinfo method, the (mnt_id, ino) of every fd showing a
 *     lock; with the fallback, the (dev, ino) of every /proc/locks entry.
 *  4. candidates: every fd of the tree on such a file; classified by its link target
 *     (deleted, socket, … are reported in `skipped`), and checked reachable through
 *     /proc/<pid>/root.
 *  5. descriptions: candidates grouped exactly with kcmp(KCMP_FILE); kcmp is only called
 *     within a (mnt_id, ino) bucket, sorted by kcmp's ordering, so it costs O(n log n) per
 *     bucket and nothing for files opened once.
 *  6. locks: OFD/flock/lease locks recorded once per description, on the first process
 *     (dump order) and its lowest fd; POSIX locks once per owning process — even when the
 *     description is shared with the parent (CRIU drops that case).
 */
import { readFileSync } from 'node:fs';
import { isAscii } from 'node:buffer';
import { hostname, release } from 'node:os';
import { quietLog, type Log } from '../log/lite.js';
import {
  FORMAT_VERSION, type Checkpoint, type FdRecord, type FileRecord, type LockKind, type LockRecord, type ProcessRecord, type SkippedFd,
  type SourceIdentity,
} from '../image/index.js';
import {
  classifyFdTarget, descendants, readProcLocks, listFds, parseCgroupPath, parseFdinfo, probeFdinfoLocks, readMountinfo, readStatIdentity, readStatus,
  splitByMount, type FdInfo, type MountInfo, type ProcLock,
} from '../proc/index.js';
import * as sys from '../sys/index.js';
import { ProcDir, type FdinfoBlock } from '../sys/index.js';
import { DumpError } from './dump-errors.js';
import { attributeProcLocks } from './dump-proclocks.js';
import { findPathInNamespace } from './remap.js';

export { DumpError } from './dump-errors.js';

export type DumpMethod = 'auto' | 'fdinfo' | 'proc-locks';

export interface DumpOptions {
  /** host pids */
  readonly pids: readonly number[];
  /** add every descendant of each pid */
  readonly tree?: boolean;
  readonly method?: DumpMethod;
  /** record only these lock kinds (default: all) */
  readonly kinds?: readonly LockKind[];
  readonly source?: Partial<SourceIdentity>;
  /** a winston Logger or jsonLogger() */
  readonly logger?: Log;
  /** called every `progressEvery` fds scanned, and once at the end */
  readonly onProgress?: (done: number, total: number) => void;
  readonly progressEvery?: number;
}

const O_CLOEXEC = 0o2000000;
const KIND_ORDER: Readonly<Record<LockKind, number>> = { FLOCK: 0, LEASE: 1, OFD: 2, POSIX: 3 };

/** One fd of one process as scanned. */
export interface ScannedFd {
  readonly pid: number;
  readonly fd: number;
  readonly info: FdInfo;
  /** process index in dump order */
  readonly order: number;
}

/** A candidate fd after classification, with its file identity. */
export interface Candidate extends ScannedFd {
  readonly path: string;
  readonly dev: { readonly major: number; readonly minor: number };
  readonly ino: bigint;
}

/** A lock attributed to a (pid, fd) by one of the two methods. */
export interface FoundLock {
  readonly kind: LockKind;
  readonly type: 'READ' | 'WRITE';
  readonly start: bigint;
  readonly end: bigint | 'EOF';
  /** POSIX: owning pid; others: the pid of the fd it was seen on */
  readonly pid: number;
  readonly fd: number;
}

interface ProcCtx {
  readonly pid: number;
  readonly order: number;
  /** start time from /proc/<pid>/stat: the same process at the end of the dump, not a successor */
  readonly startTime: string;
  record: ProcessRecord;
  mounts: ReadonlyMap<number, MountInfo> | null;
}

function isGone(err: unknown): boolean {
  const c = (err as NodeJS.ErrnoException).code;
  return c === 'ENOENT' || c === 'ESRCH';
}

export function resolveMethod(method: DumpMethod | undefined, env: NodeJS.ProcessEnv = process.env): 'fdinfo' | 'proc-locks' {
  if (env.LOCKMIG_FORCE_PROC_LOCKS === '1') return 'proc-locks';
  const m = method ?? 'auto';
  if (m === 'proc-locks') return 'proc-locks';
  const has = probeFdinfoLocks();
  if (m === 'fdinfo') {
    if (!has) throw new DumpError('NO_FDINFO_LOCKS', 'this kernel shows no lock: lines in /proc/<pid>/fdinfo; use --method proc-locks (or auto)');
    return 'fdinfo';
  }
  return has ? 'fdinfo' : 'proc-locks';
}

/** Convert a kernel lock line into a lock kind lockmig records, or a reason why not. */
export function recordable(l: ProcLock): { kind: LockKind; type: 'READ' | 'WRITE' } | { skip: string } {
  let kind: LockKind;
  switch (l.kind) {
    case 'POSIX': kind = 'POSIX'; break;
    case 'OFDLCK': kind = 'OFD'; break;
    case 'FLOCK': kind = 'FLOCK'; break;
    case 'LEASE': kind = 'LEASE'; break;
    default: return { skip: `${l.kind} locks are not migrated` };
  }
  if (l.type === 'UNLCK') return { skip: `${l.kind} ${l.mode} UNLCK (a lease being broken) cannot be re-taken` };
  return { kind, type: l.type };
}

function collectPids(opts: DumpOptions): number[] {
  const out: number[] = [];
  const seen = new Set<number>();
  for (const p of opts.pids) {
    if (!Number.isInteger(p) || p < 1) throw new DumpError('BAD_OPTIONS', `invalid pid ${p}`);
    if (!seen.has(p)) { seen.add(p); out.push(p); }
  }
  if (opts.tree) {
    for (const p of [...out]) for (const d of descendants(p)) if (!seen.has(d)) { seen.add(d); out.push(d); }
  }
  return out;
}

function readProcess(pid: number, order: number): ProcCtx {
  const id = readStatIdentity(pid);
  // a zombie has no fd table left: it is as gone as a process that does not exist
  if (!id || id.exited) throw Object.assign(new Error(`process ${pid} has exited`), { code: 'ESRCH' });
  const st = readStatus(pid);
  let cgroup = '';
  try { cgroup = parseCgroupPath(readFileSync(`/proc/${pid}/cgroup`, 'utf8')); } catch (err) { if (!isGone(err)) throw err; }
  return {
    pid, order, mounts: null, startTime: id.startTime,
    record: { pid, ppid: st.ppid, nsPid: st.nsPids[st.nsPids.length - 1] ?? pid, comm: st.name, cgroup },
  };
}

/** The process's mount table (read once); empty when the process has exited meanwhile. */
function mountsOf(p: ProcCtx): ReadonlyMap<number, MountInfo> {
  if (!p.mounts) {
    try { p.mounts = readMountinfo(p.pid); } catch (err) { if (!isGone(err)) throw err; p.mounts = new Map(); }
  }
  return p.mounts;
}

/** Group fds into open file descriptions with kcmp. Fds in `bucket` share (mnt_id, ino). */
export function groupByDescription<T extends { readonly pid: number; readonly fd: number }>(
  bucket: readonly T[],
  kcmpFile: (pid1: number, fd1: number, pid2: number, fd2: number) => 0 | 1 | 2 | 3 = sys.kcmpFile,
): T[][] {
  if (bucket.length === 1) return [[bucket[0]!]];
  const memo = new Map<string, 0 | 1 | 2 | 3>();
  const kcmp = (a: T, b: T): 0 | 1 | 2 | 3 => {
    const key = `${a.pid}/${a.fd}|${b.pid}/${b.fd}`;
    const hit = memo.get(key);
    if (hit !== undefined) return hit;
    try {
      const r = kcmpFile(a.pid, a.fd, b.pid, b.fd);
      memo.set(key, r);
      return r;
    } catch (err) {
      throw new DumpError('KCMP', `kcmp(KCMP_FILE) of pid ${a.pid} fd ${a.fd} and pid ${b.pid} fd ${b.fd} failed: ${(err as Error).message}`, { cause: err });
    }
  };
  let unordered = false;
  const sorted = [...bucket].sort((a, b) => {
    const r = kcmp(a, b);
    if (r === 3) unordered = true;
    return r === 0 ? 0 : r === 1 ? -1 : 1;
  });
  const groups: T[][] = [];
  if (!unordered) {
    for (const x of sorted) {
      const g = groups[groups.length - 1];
      if (g && kcmp(g[0]!, x) === 0) g.push(x);
      else groups.push([x]);
    }
  } else {
    // kcmp could not order the pointers: fall back to exact pairwise equality.
    for (const x of bucket) {
      const g = groups.find((gr) => kcmp(gr[0]!, x) === 0);
      if (g) g.push(x); else groups.push([x]);
    }
  }
  // dump order inside and between groups
  const rank = (t: T) => bucket.indexOf(t);
  for (const g of groups) g.sort((a, b) => rank(a) - rank(b));
  groups.sort((a, b) => rank(a[0]!) - rank(b[0]!));
  return groups;
}

function reasonMessage(kind: SkippedFd['reason'], target: string): string {
  switch (kind) {
    case 'deleted': return `file was unlinked while open (${target}); it cannot be reopened by path`;
    case 'socket': return `sockets cannot be reopened by path (${target})`;
    case 'pipe': return `pipes cannot be reopened by path (${target})`;
    case 'anon_inode': return `anonymous inodes cannot be reopened by path (${target})`;
    case 'memfd': return `memfd files have no path to reopen (${target})`;
    case 'unreachable': return `the path ${JSON.stringify(target)} no longer leads to this file from the process's root`;
    default: return `not a regular path (${target})`;
  }
}

/** One fd as the scan saw it: the fdinfo text, its (mnt_id, ino) key, the full parse when made. */
interface Scan {
  readonly pid: number;
  readonly fd: number;
  readonly order: number;
  readonly text: string;
  key: string;
  info: FdInfo | null;
}

/** The usual fdinfo of a plain file: pos, flags, mnt_id, ino and nothing else (no lock: lines). */
const PLAIN_FDINFO = /^pos:\t\d+\nflags:\t[0-7]+\nmnt_id:\t(\d+)\nino:\t(\d+)\n$/;

const keyOf = (info: FdInfo): string => `${info.mntId}:${info.ino ?? ''}`;

function scanFdinfo(pid: number, fd: number, order: number, text: string): Scan {
  const plain = PLAIN_FDINFO.exec(text);
  if (plain) return { pid, fd, order, text, key: `${plain[1]}:${plain[2]}`, info: null };
  const info = parseFdinfo(text, `/proc/${pid}/fdinfo/${fd}`);
  return { pid, fd, order, text, key: keyOf(info), info };
}

/** The full record of a scanned fd (parsed on first use). */
function infoOf(s: Scan): FdInfo {
  s.info ??= parseFdinfo(s.text, `/proc/${s.pid}/fdinfo/${s.fd}`);
  return s.info;
}

/** A ProcDir on `dir`, or null when the process has gone. */
function openProcDir(dir: string): ProcDir | null {
  try {
    return new ProcDir(dir);
  } catch (err) {
    if (err instanceof sys.SyscallError && (err.code === 'ENOENT' || err.code === 'ESRCH')) return null;
    throw err;
  }
}

/** stat with exact 64-bit inode and superblock device numbers; null when the path is gone or unreadable. */
const statBig = (p: string): sys.StatxResult | null => sys.statxPath(p);

export function dumpProcesses(opts: DumpOptions): Checkpoint {
  const log = opts.logger ?? quietLog;
  // per-phase wall time, reported with the final log line
  const phaseMs: Record<string, number> = {};
  let tPrev = performance.now();
  const T = (phase: string): void => { const n = performance.now(); phaseMs[phase] = Math.round((n - tPrev) * 10) / 10; tPrev = n; };
  const method = resolveMethod(opts.method);
  const kinds = opts.kinds ? new Set(opts.kinds) : null;
  const every = Math.max(1, opts.progressEvery ?? 1000);

  T('method');
  // 1. processes
  const pids = collectPids(opts);
  const procs: ProcCtx[] = [];
  for (const pid of pids) {
    try {
      procs.push(readProcess(pid, procs.length));
    } catch (err) {
      if (!isGone(err)) throw err;
      if (opts.pids.includes(pid)) throw new DumpError('NO_PROCESS', `process ${pid} does not exist`, { cause: err });
      log.warn('process exited during dump', { pid });
    }
  }
  const byPid = new Map(procs.map((p) => [p.pid, p]));

  T('procs');
  // 2. scan fdinfo. Most fds of a big process are plain, unlocked files: for those only the
  // (mnt_id, ino) key is taken from the text (no BigInt, no record); a full parse happens for
  // fds with extra lines and, in step 4, for the fds on a file that matters.
  const fdLists = new Map<number, number[]>();
  let total = 0;
  for (const p of procs) {
    let fds: number[] = [];
    try { fds = listFds(p.pid); } catch (err) { if (!isGone(err)) throw err; }
    fdLists.set(p.pid, fds);
    total += fds.length;
  }
  const scanned: Scan[] = [];
  // plain fds whose mnt_id and inode liblockmig parsed: no text or record made unless they matter
  const plainRefs: { block: FdinfoBlock; pid: number; order: number }[] = [];
  let done = 0;
  for (const p of procs) {
    const dir = openProcDir(`/proc/${p.pid}/fdinfo`);
    if (!dir) continue;
    try {
      // in slices, so a huge process still reports progress
      const list = fdLists.get(p.pid)!;
      for (let from = 0; from < list.length; from += every) {
        const block = dir.readFdinfoBlock(list.slice(from, from + every));
        const plain = block.plain;
        for (let i = 0; i < block.names.length; i++) {
          if (plain && plain[4 * i] === 1) continue;
          const text = block.text(i);
          if (text === null) continue;
          scanned.push(scanFdinfo(p.pid, block.names[i]!, p.order, text));
        }
        if (plain) plainRefs.push({ block, pid: p.pid, order: p.order });
        done += block.names.length;
        if (from + every < list.length) opts.onProgress?.(done, total);
      }
    } finally {
      dir.close();
    }
  }
  opts.onProgress?.(done, total);
  /** Make Scan records of the plain fds that `want(mnt, ino)` accepts (all of them: want = null). */
  const materialize = (want: ((mnt: number, ino: number | string) => boolean) | null): void => {
    for (const { block, pid, order } of plainRefs) {
      const plain = block.plain!;
      for (let i = 0; i < block.names.length; i++) {
        if (plain[4 * i] !== 1) continue;
        const mnt = plain[4 * i + 1]!;
        const lo = plain[4 * i + 2]! >>> 0;
        const hi = plain[4 * i + 3]! >>> 0;
        // exact as a number below 2^53, else as a decimal string
        const ino = hi < 0x200000 ? hi * 0x100000000 + lo : ((BigInt(hi) << 32n) | BigInt(lo)).toString();
        if (want && !want(mnt, ino)) continue;
        const text = block.text(i);
        if (text !== null) scanned.push({ pid, fd: block.names[i]!, order, text, key: `${mnt}:${ino}`, info: null });
      }
    }
    plainRefs.length = 0;
  };
  if (method !== 'fdinfo') materialize(null);

  T('scan');
  // 3. which (mnt_id, ino) matter
  const needIno = scanned.some((s) => s.info !== null && s.info.ino === null);
  const inoOf = (s: ScannedFd): bigint | null => {
    if (s.info.ino !== null) return s.info.ino;
    return statBig(`/proc/${s.pid}/fd/${s.fd}`)?.ino ?? null;
  };
  if (needIno || method !== 'fdinfo') {
    // old kernels (no ino: line) and the /proc/locks fallback need every fd parsed
    materialize(null);
    for (const s of scanned) {
      const full = infoOf(s);
      if (full.ino === null) s.info = { ...full, ino: inoOf({ pid: s.pid, fd: s.fd, order: s.order, info: full }) };
      s.key = keyOf(s.info!);
    }
  }
  const devOf = (s: ScannedFd): { major: number; minor: number } | null => {
    const m = mountsOf(byPid.get(s.pid)!).get(s.info.mntId);
    return m ? { major: m.major, minor: m.minor } : null;
  };

  const interesting = new Set<string>();
  let procLocksTable: import('../proc/index.js').ProcLocksTable | null = null;
  if (method === 'fdinfo') {
    const inos = new Set<number | string>();
    for (const s of scanned) {
      if (s.info === null || s.info.locks.length === 0) continue;
      if (s.info.locks.some((l) => { const r = recordable(l); return 'kind' in r && (!kinds || kinds.has(r.kind)); })) {
        interesting.add(s.key);
        if (s.info.ino !== null) inos.add(s.info.ino <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(s.info.ino) : s.info.ino.toString());
      }
    }
    // the plain fds on those files (other descriptions, a child's inherited fd without a lock line)
    materialize((mnt, ino) => inos.has(ino) && interesting.has(`${mnt}:${ino}`));
  } else {
    procLocksTable = readProcLocks();
    const wanted = new Set(procLocksTable.locks.filter((l) => l.file).map((l) => `${l.file!.major}:${l.file!.minor}:${l.file!.ino}`));
    for (const s of scanned) {
      const full = infoOf(s);
      if (full.ino === null) continue;
      const d = devOf({ pid: s.pid, fd: s.fd, order: s.order, info: full });
      if (d && wanted.has(`${d.major}:${d.minor}:${full.ino}`)) interesting.add(s.key);
    }
  }

  T('interesting');
  // 4. candidates, classified
  const skipped: SkippedFd[] = [];
  const warnings: string[] = [];
  const warn = (message: string): void => { warnings.push(message); log.warn(message); };
  const buckets = new Map<string, Candidate[]>();
  // the link of every fd on a file that matters, one call per process (in scan order)
  const chosen = scanned.filter((sc) => interesting.has(sc.key)).sort((a, b) => (a.order - b.order) || (a.fd - b.fd));
  // "reachable from the process's root" is checked relative to one fd of /proc/<pid>/root
  const roots = new Map<number, number>();
  const rootFd = (pid: number): number => {
    let fd = roots.get(pid);
    if (fd === undefined) {
      try { fd = sys.open(`/proc/${pid}/root`, sys.O_PATH | sys.O_DIRECTORY | sys.O_CLOEXEC); } catch { fd = -1; }
      roots.set(pid, fd);
    }
    return fd;
  };
  const statViaRoot = (pid: number, path: string): sys.StatxResult | null => {
    const fd = rootFd(pid);
    if (fd < 0) return statBig(`/proc/${pid}/root${path}`);
    const rel = path.replace(/^\/+/, '');
    return sys.statxAt(fd, rel === '' ? '.' : rel);
  };
  // links, and with liblockmig the stat of each path below the process's root, in one call per process
  const links = new Map<Scan, Buffer | null>();
  const rootStats = new Map<Scan, sys.StatxResult | null>();
  for (const p of procs) {
    const mine = chosen.filter((sc) => sc.pid === p.pid);
    if (mine.length === 0) continue;
    const dir = openProcDir(`/proc/${p.pid}/fd`);
    if (!dir) continue;
    try {
      const root = rootFd(p.pid);
      const both = root >= 0 ? dir.readLinksWithStat(mine.map((sc) => sc.fd), root) : null;
      if (both) {
        mine.forEach((sc, i) => { links.set(sc, both.links[i] ?? null); rootStats.set(sc, both.stats[i] ?? null); });
      } else {
        const got = dir.readLinks(mine.map((sc) => sc.fd));
        mine.forEach((sc, i) => links.set(sc, got[i] ?? null));
      }
    } finally {
      dir.close();
    }
  }
  try {
    for (const sc of chosen) {
      const k = sc.key;
      const s: ScannedFd = { pid: sc.pid, fd: sc.fd, order: sc.order, info: infoOf(sc) };
      const locked = method === 'fdinfo' ? s.info.locks.length > 0 : true;
      const raw = links.get(sc) ?? null;
      if (raw === null) continue; // closed meanwhile, or the process is gone
      const target = raw.toString('utf8');
      const link = { text: target, exact: isAscii(raw) || Buffer.from(target, 'utf8').equals(raw) };
      const c = classifyFdTarget(target);
      const skip = (reason: SkippedFd['reason'], shown = target, message = reasonMessage(reason, shown)): void => {
        skipped.push({ pid: s.pid, fd: s.fd, target, reason, message, locked });
        log.warn('fd cannot be restored by path', { pid: s.pid, fd: s.fd, target, reason, locked, message });
      };
      if (!link.exact) { skip('other', target, `the path is not valid UTF-8 (${JSON.stringify(target)}), so it cannot be recorded exactly`); continue; }
      let path: string;
      if (c.kind === 'path') path = c.path!;
      else if (c.kind === 'deleted') path = target; // until the link count says it is really gone
      else { skip(c.kind === 'other' ? 'other' : c.kind); continue; }
      // A description from another mount namespace (a handover, SCM_RIGHTS) whose own path leads
      // nowhere here: find the file under one of this process's own mounts (src/engine/remap.ts).
      const remapped = (): boolean => {
        if (c.kind !== 'path') return false;
        const fdStat = statBig(`/proc/${s.pid}/fd/${s.fd}`);
        if (!fdStat || (s.info.ino !== null && fdStat.ino !== s.info.ino)) return false;
        const r = findPathInNamespace(s.pid, path, fdStat, mountsOf(byPid.get(s.pid)!));
        if (!r) return false;
        log.info('fd reached through another path in its own mount namespace', { pid: s.pid, fd: s.fd, shown: path, path: r.path, mountPoint: r.mount.mountPoint });
        let b = buckets.get(k);
        if (!b) { b = []; buckets.set(k, b); }
        b.push({ ...s, info: { ...s.info, mntId: r.mount.mntId }, path: r.path, dev: { major: r.mount.major, minor: r.mount.minor }, ino: fdStat.ino });
        return true;
      };
      const dev = devOf(s);
      if (!dev) { if (!remapped()) skip('unreachable', path); continue; }
      // Reachable by this path from the process's root? Fast path: the path resolves to the
      // fd's inode on the mount's device (one stat). Otherwise (deleted, btrfs st_dev, no ino
      // line) compare with a stat of the fd itself.
      let viaRoot = c.kind !== 'path' ? null : rootStats.has(sc) ? rootStats.get(sc)! : statViaRoot(s.pid, path);
      let ino = s.info.ino;
      const fast = viaRoot !== null && ino !== null && viaRoot.ino === ino
        && viaRoot.major === dev.major && viaRoot.minor === dev.minor;
      if (!fast) {
        const fdStat = statBig(`/proc/${s.pid}/fd/${s.fd}`);
        if (!fdStat) continue; // closed meanwhile
        if (ino !== null && fdStat.ino !== ino) {
          skip('other', target, `fd ${s.fd} was closed and reused for another file while it was being dumped`);
          continue;
        }
        if (c.kind === 'deleted') {
          if (fdStat.nlink === 0) { skip('deleted'); continue; }
          viaRoot = statViaRoot(s.pid, path); // a live file really named "… (deleted)"
        }
        if (!viaRoot || viaRoot.ino !== fdStat.ino || viaRoot.major !== fdStat.major || viaRoot.minor !== fdStat.minor) { if (!remapped()) skip('unreachable', path); continue; }
        ino ??= fdStat.ino;
      }
      const cand: Candidate = { ...s, path, dev, ino: ino! };
      let b = buckets.get(k);
      if (!b) { b = []; buckets.set(k, b); }
      b.push(cand);
    }
  } finally {
    for (const fd of roots.values()) if (fd >= 0) sys.closeQuiet(fd);
  }

  T('candidates');
  // 5. descriptions
  const groups: Candidate[][] = [];
  for (const b of buckets.values()) groups.push(...groupByDescription(b));
  groups.sort((a, b) => (a[0]!.order - b[0]!.order) || (a[0]!.fd - b[0]!.fd));

  const files: FileRecord[] = [];
  const fds: FdRecord[] = [];
  const fileOf = new Map<string, number>();
  groups.forEach((g, i) => {
    const id = i + 1;
    const first = g[0]!;
    const p = byPid.get(first.pid)!;
    const mnt = mountsOf(p).get(first.info.mntId)!;
    let split = splitByMount(first.path, mnt);
    if (!split) {
      log.warn('path is not below its mount point as mountinfo shows it', { pid: first.pid, fd: first.fd, path: first.path, mountPoint: mnt.mountPoint });
      split = { mountPoint: '/', relPath: first.path.replace(/^\/+/, '') };
    }
    files.push({
      id, path: first.path, flags: first.info.flags & ~O_CLOEXEC, pos: first.info.pos, mntId: first.info.mntId,
      dev: first.dev, ino: first.ino, mountPoint: split.mountPoint, relPath: split.relPath,
    });
    for (const c of g) {
      fds.push({ pid: c.pid, fd: c.fd, fileId: id, cloexec: (c.info.flags & O_CLOEXEC) !== 0 });
      fileOf.set(`${c.pid}/${c.fd}`, id);
    }
  });
  fds.sort((a, b) => (byPid.get(a.pid)!.order - byPid.get(b.pid)!.order) || (a.fd - b.fd));

  T('groups');
  // 6. locks
  let found: FoundLock[];
  if (method === 'fdinfo') {
    found = [];
    const ordered = groups.flat().sort((a, b) => (a.order - b.order) || (a.fd - b.fd));
    for (const c of ordered) {
      for (const l of c.info.locks) {
        const r = recordable(l);
        if (!('kind' in r)) {
          const w = `${l.kind} lock on ${c.path} (pid ${c.pid} fd ${c.fd}) not recorded: ${r.skip}`;
          if (!warnings.includes(w)) warn(w);
          continue;
        }
        if (l.file && l.file.ino !== c.ino) {
          throw new DumpError('PROBE', `fdinfo of pid ${c.pid} fd ${c.fd} shows a lock on inode ${l.file.ino}, but the fd is inode ${c.ino}`);
        }
        found.push({ kind: r.kind, type: r.type, start: l.start, end: l.end, pid: c.pid, fd: c.fd });
      }
    }
  } else {
    found = attributeProcLocks(procLocksTable!, groups, new Set(byPid.keys()), log, warn);
  }
  // locks on fds that were skipped (deleted, sockets…) stay visible in `skipped`
  const locks: LockRecord[] = [];
  const seen = new Set<string>();
  for (const f of found) {
    if (kinds && !kinds.has(f.kind)) continue;
    const fileId = fileOf.get(`${f.pid}/${f.fd}`);
    if (fileId === undefined) continue;
    // OFD/FLOCK/LEASE belong to the description; POSIX to the process.
    const owner = f.kind === 'POSIX' ? `pid${f.pid}` : 'desc';
    const k = `${owner}|${fileId}|${f.kind}|${f.type}|${f.start}|${f.end}`;
    if (seen.has(k)) continue;
    seen.add(k);
    locks.push({ kind: f.kind, type: f.type, start: f.start, end: f.end, pid: f.pid, fd: f.fd, fileId });
  }

  // one canonical order for both methods: process, fd, then range
  const procOrder = (pid: number) => byPid.get(pid)!.order;
  const cmpBig = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0);
  const endKey = (e: bigint | 'EOF') => (e === 'EOF' ? 1n << 64n : e);
  locks.sort((a, b) => (procOrder(a.pid) - procOrder(b.pid)) || (a.fd - b.fd) || cmpBig(a.start, b.start)
    || cmpBig(endKey(a.end), endKey(b.end)) || (KIND_ORDER[a.kind] - KIND_ORDER[b.kind]) || (a.type === b.type ? 0 : a.type === 'READ' ? -1 : 1));

  // Keep only descriptions that carry a lock (another description of the same file that
  // holds none is not part of the lock state), numbering them 1.. in dump order.
  const used = new Set(locks.map((l) => l.fileId));
  const renumber = new Map<number, number>();
  const keptFiles = files.filter((f) => used.has(f.id)).map((f, i) => { renumber.set(f.id, i + 1); return { ...f, id: i + 1 }; });
  const keptFds = fds.filter((d) => used.has(d.fileId)).map((d) => ({ ...d, fileId: renumber.get(d.fileId)! }));
  const keptLocks = locks.map((l) => ({ ...l, fileId: renumber.get(l.fileId)! }));
  T('locks');
  // A process that exited while it was read showed fewer fds (or none) than it had: what was read
  // of it is not its lock state. Say so instead of returning a checkpoint that silently lacks locks.
  for (const p of procs) {
    const now = readStatIdentity(p.pid);
    if (!now || now.exited || now.startTime !== p.startTime) {
      throw new DumpError('NO_PROCESS', `process ${p.pid} exited during the dump: what was read of its fds and locks cannot be trusted`);
    }
  }
  const lockedFds = new Set(locks.map((l) => `${l.pid}/${l.fd}`));
  log.info('dump complete', {
    method, processes: procs.length, fdsScanned: done, files: keptFiles.length, fds: keptFds.length, locks: locks.length,
    skipped: skipped.length, lockedFds: lockedFds.size, phaseMs,
  });
  const src = opts.source ?? {};
  return {
    formatVersion: FORMAT_VERSION,
    createdAt: new Date().toISOString(),
    source: {
      hostname: src.hostname ?? hostname(), kernel: src.kernel ?? release(), rootPid: src.rootPid ?? pids[0] ?? 0,
      ...(src.pod ? { pod: src.pod } : {}),
    },
    method,
    processes: procs.map((p) => p.record),
    files: keptFiles, fds: keptFds, locks: keptLocks, skipped,
    ...(warnings.length > 0 ? { warnings } : {}),
  };
}
