/**
 * criuToCheckpoint (pure): map decoded CRIU images onto lockmig's checkpoint model, so restore
 * and inspect run the same validated paths as for lockmig's own dumps.
 *
 * Field by field (docs/criu.md has the full table):
 *   file_lock_entry{flag,type,pid,fd,start,len} → LockRecord{kind,type,pid,fd,start,end = start+len-1 | EOF}
 *   pstree_entry{pid,ppid} + core tc.comm      → ProcessRecord{pid, ppid, nsPid = pid, comm, cgroup ''}
 *   fdinfo_entry{fd,id,flags}                   → FdRecord{pid, fd, fileId = id, cloexec = flags & 1}
 *   reg_file_entry{id,flags,pos,name,mnt_id}    → FileRecord{id, flags, pos, path = name, mntId}
 *   mnt_entry{mountpoint,root_dev} of mnt_id    → FileRecord{mountPoint, relPath, dev}
 * CRIU does not record inode numbers (FileRecord.ino = 0n) nor cgroups.
 *
 * As lockmig's dump does, only locked open file descriptions are kept, with every fd (of any
 * process) that shares them. A locked fd whose file cannot be reopened by path (a socket, a
 * pipe, a memfd, a file unlinked while open, an external file, a path outside its recorded
 * mount) is listed in `skipped` with the reason, and its locks are not restored.
 */
import { ImageError } from '../errors.js';
import { FORMAT_VERSION } from '../manifest.js';
import type {
  Checkpoint, CheckpointOrigin, FdRecord, FileRecord, LockKind, LockRecord, LockType, ProcessRecord, SkippedFd, SourceIdentity,
} from '../model.js';
import { FD_TYPE, FD_TYPE_NAMES, kdevSplit } from './schema.js';
import type { CriuDump, CriuFile, CriuMount } from './read.js';

export interface ImportMeta {
  readonly origin: CheckpointOrigin;
  /** ISO time of the checkpoint (config.dump's checkpointedTime); default: inventory.img's mtime, else `now` */
  readonly createdAt?: string;
  readonly hostname?: string;
  readonly pod?: SourceIdentity['pod'];
  readonly now?: () => Date;
}

const KIND_BY_FLAG: Readonly<Record<number, LockKind>> = { 1: 'POSIX', 2: 'FLOCK', 4: 'OFD', 8: 'LEASE' };
/** criu/include/file-lock.h: leases being broken carry this bit in their type */
const LEASE_BREAKING = 4;
const F_RDLCK = 0;
const F_WRLCK = 1;
const INT64_MAX = (1n << 63n) - 1n;
const O_CLOEXEC = 0o2000000;

const SOCKETS = new Set([4, 5, 10, 13]);
const PIPES = new Set([2, 3]);
const ANON = new Set([6, 7, 8, 9, 12, 17, 19, 20]);
const MEMFD = 18;

const S_IFMT = 0o170000;
const MODE_NAMES: Readonly<Record<number, string>> = {
  0o140000: 'a socket', 0o120000: 'a symbolic link', 0o060000: 'a block device', 0o020000: 'a character device', 0o010000: 'a FIFO',
};
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

type Mapped =
  | { readonly ok: true; readonly file: FileRecord }
  | { readonly ok: false; readonly reason: SkippedFd['reason']; readonly target: string; readonly message: string };

/** Split `p` by the mount point it sits on; null when it is not below it. */
function splitByMountpoint(p: string, mp: string): { mountPoint: string; relPath: string } | null {
  if (mp === '/') return { mountPoint: '/', relPath: p.replace(/^\/+/, '') };
  if (p === mp) return { mountPoint: mp, relPath: '' };
  if (p.startsWith(`${mp}/`)) return { mountPoint: mp, relPath: p.slice(mp.length + 1) };
  return null;
}

function mapFile(f: CriuFile, dump: CriuDump): Mapped {
  const typeName = FD_TYPE_NAMES[f.type] ?? `type ${f.type}`;
  if (f.type !== FD_TYPE.REG || !f.reg) {
    const reason: SkippedFd['reason'] = SOCKETS.has(f.type) ? 'socket' : PIPES.has(f.type) ? 'pipe' : f.type === MEMFD ? 'memfd' : ANON.has(f.type) ? 'anon_inode' : 'other';
    return { ok: false, reason, target: `${typeName}:${f.id}`, message: `a ${typeName} file cannot be reopened by path` };
  }
  const r = f.reg;
  if (r.ext) return { ok: false, reason: 'other', target: r.name, message: 'an external file (criu --external file[…]): CRIU did not record its path' };
  const remap = dump.remaps.get(f.id);
  if (remap === 'GHOST' || remap === 'LINKED') {
    return { ok: false, reason: 'deleted', target: `${r.name} (deleted)`, message: `unlinked while open (CRIU kept it as a ${remap.toLowerCase()} remap)` };
  }
  if (remap !== undefined) return { ok: false, reason: 'other', target: r.name, message: `CRIU recorded a ${remap} path remap for it` };
  if (!r.name.startsWith('/') || r.name.includes('\0')) return { ok: false, reason: 'other', target: r.name, message: 'not an absolute path' };
  if (r.mode !== undefined) {
    const fmt = r.mode & S_IFMT;
    if (fmt !== S_IFREG && fmt !== S_IFDIR) {
      return { ok: false, reason: 'other', target: r.name, message: `${MODE_NAMES[fmt] ?? `file type 0${fmt.toString(8)}`}: lockmig restores locks on regular files and directories` };
    }
  }
  let mountPoint = '';
  let relPath = '';
  let dev = { major: 0, minor: 0 };
  if (r.mntId >= 0 && dump.mounts) {
    const m: CriuMount | undefined = dump.mounts.get(r.mntId);
    if (!m) return { ok: false, reason: 'unreachable', target: r.name, message: `its mount id ${r.mntId} is not in the dumped mount table` };
    if (m.deleted) return { ok: false, reason: 'unreachable', target: r.name, message: `its mount ${m.mountpoint} (id ${r.mntId}) was deleted` };
    const split = splitByMountpoint(r.name, m.mountpoint);
    if (!split) return { ok: false, reason: 'unreachable', target: r.name, message: `the path is not below its mount point ${m.mountpoint} (mount id ${r.mntId})` };
    ({ mountPoint, relPath } = split);
    dev = kdevSplit(m.rootDev);
  }
  return {
    ok: true,
    file: { id: f.id, path: r.name, flags: (r.flags & ~O_CLOEXEC) >>> 0, pos: r.pos, mntId: r.mntId, dev, ino: 0n, mountPoint, relPath },
  };
}

export function criuToCheckpoint(dump: CriuDump, meta: ImportMeta): Checkpoint {
  const lockImg = dump.label('filelocks.img');
  const invalid = (msg: string, offset: number): never => { throw new ImageError('INVALID', lockImg, msg, offset); };
  const procs = new Map(dump.processes.map((p) => [p.pid, p]));
  const warnings: string[] = [];

  const mapped = new Map<number, Mapped>();
  const mapOnce = (f: CriuFile): Mapped => {
    let m = mapped.get(f.id);
    if (!m) { m = mapFile(f, dump); mapped.set(f.id, m); }
    return m;
  };

  const locks: LockRecord[] = [];
  const skipped = new Map<string, SkippedFd>();
  const lockedFiles = new Set<number>();
  let breaking = 0;
  for (const l of dump.locks ?? []) {
    const kind = KIND_BY_FLAG[l.flag];
    if (!kind) invalid(`unknown lock flag ${l.flag} (CRIU writes POSIX 1, FLOCK 2, OFD 4, LEASE 8)`, l.offset);
    let t = l.type;
    if (kind === 'LEASE' && (t & LEASE_BREAKING)) { breaking++; continue; }
    if (kind === 'LEASE') t &= ~LEASE_BREAKING;
    if (t !== F_RDLCK && t !== F_WRLCK) invalid(`${kind} lock of pid ${l.pid} fd ${l.fd} has type ${l.type} (expected READ 0 or WRITE 1)`, l.offset);
    const type: LockType = t === F_WRLCK ? 'WRITE' : 'READ';
    if (!procs.has(l.pid)) invalid(`${kind} lock of pid ${l.pid}, which pstree.img does not hold`, l.offset);
    const fdEntry = dump.fds.get(l.pid)!.find((d) => d.fd === l.fd);
    if (!fdEntry) invalid(`${kind} lock of pid ${l.pid} on fd ${l.fd}, which ${procs.get(l.pid)!.fdinfoImage} does not hold`, l.offset);
    const file = dump.files.get(fdEntry!.id);
    if (!file) throw new ImageError('INVALID', dump.label(procs.get(l.pid)!.fdinfoImage), `fd ${l.fd} refers to file ${fdEntry!.id}, which files.img does not hold`);
    if (l.start < 0n || l.len < 0n || (l.len > 0n && l.start + l.len - 1n > INT64_MAX)) {
      invalid(`${kind} lock of pid ${l.pid} fd ${l.fd}: bad range start ${l.start} len ${l.len}`, l.offset);
    }
    const m = mapOnce(file!);
    if (!m.ok) {
      const key = `${l.pid}/${l.fd}`;
      if (!skipped.has(key)) skipped.set(key, { pid: l.pid, fd: l.fd, target: m.target, reason: m.reason, message: m.message, locked: true });
      continue;
    }
    lockedFiles.add(file!.id);
    locks.push({ kind: kind!, type, start: l.start, end: l.len === 0n ? 'EOF' : l.start + l.len - 1n, pid: l.pid, fd: l.fd, fileId: file!.id });
  }

  // every fd of every process on a locked description, and the descriptions themselves
  const fds: FdRecord[] = [];
  const holders = new Map<number, Set<number>>(); // file id → pids holding it
  for (const p of dump.processes) {
    for (const d of dump.fds.get(p.pid) ?? []) {
      const f = dump.files.get(d.id);
      if (f && f.type === FD_TYPE.REG) holders.set(d.id, (holders.get(d.id) ?? new Set()).add(p.pid));
      if (!lockedFiles.has(d.id)) continue;
      fds.push({ pid: p.pid, fd: d.fd, fileId: d.id, cloexec: d.cloexec });
    }
  }
  const files: FileRecord[] = [...lockedFiles].sort((a, b) => a - b).map((id) => (mapped.get(id) as Extract<Mapped, { ok: true }>).file);

  if (dump.locks === null) {
    warnings.push('filelocks.img is absent: CRIU records file locks only when dumping with --file-locks (and then refuses to dump a process holding one), so this dump holds no lock');
  }
  if (breaking > 0) warnings.push(`${breaking} lease(s) being broken at dump time were not imported (lockmig never restores leases)`);
  if (dump.mounts === null && files.some((f) => f.mntId >= 0)) {
    warnings.push('files carry mount ids but no mountpoints-<ns>.img was found: paths are used as recorded, without checking them against their mounts');
  }
  if (dump.processes.length > 1) {
    // CRIU's discard_dup_locks_tail drops a POSIX lock a process took through a description it
    // shares with a process dumped before it (inherited across fork): the image cannot show it.
    const shared = [...holders].filter(([id, ps]) => ps.size > 1 && dump.files.get(id)?.reg && (dump.files.get(id)!.reg!.mode === undefined || ((dump.files.get(id)!.reg!.mode! & S_IFMT) === S_IFREG)));
    if (shared.length > 0) {
      const names = shared.slice(0, 5).map(([id]) => JSON.stringify(dump.files.get(id)!.reg!.name)).join(', ');
      warnings.push(`${shared.length} regular file description(s) are shared by several processes (${names}${shared.length > 5 ? ', …' : ''}): CRIU (≤ 4.2) does not record a POSIX lock `
        + 'that a process took through a description inherited from its parent, so such a lock, if there was one, is not in this image and cannot be restored (docs/criu.md)');
    }
  }

  const processes: ProcessRecord[] = dump.processes.map((p) => ({ pid: p.pid, ppid: p.ppid, nsPid: p.pid, comm: p.comm ?? '', cgroup: '' }));
  const createdAt = meta.createdAt ?? (dump.writtenAt ?? (meta.now ?? (() => new Date()))()).toISOString();
  return {
    formatVersion: FORMAT_VERSION, createdAt, method: 'criu', origin: meta.origin,
    source: {
      hostname: meta.hostname ?? dump.hostname ?? '', kernel: 'unknown (not recorded by CRIU)', rootPid: dump.processes[0]!.pid,
      ...(meta.pod ? { pod: meta.pod } : {}),
    },
    processes, files, fds, locks, skipped: [...skipped.values()],
    ...(warnings.length > 0 ? { warnings } : {}),
  };
}
