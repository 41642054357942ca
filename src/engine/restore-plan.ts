/**
 * Restore planning (pure): which open file descriptions to recreate, at which fd numbers,
 * and which locks to re-take through which fd. No system calls here.
 *
 * A checkpoint may hold several processes (a tree); the restore shim is ONE process that
 * execs ONE program. The mapping is:
 *  - Source processes: `pids` selects them (default: every recorded process).
 *  - The "primary" process is the checkpoint's root pid when selected, else the first
 *    selected process in dump order. All its recorded fds are placed at their recorded
 *    numbers (several fds sharing one description become dups of one open).
 *  - A description held only by other selected processes is placed at the number its first
 *    holder used when that number is still free, else at the lowest free number above the
 *    highest recorded fd ("spill"). A description already placed (inherited across fork)
 *    is not opened twice.
 *  - Fds 0, 1 and 2 are never overwritten (they are the program's stdio): a locked file
 *    recorded there spills like above.
 *  - OFD and flock locks belong to the description: each is taken once, through the fd
 *    its description was placed at. POSIX locks of every selected process are merged into
 *    the shim process (the kernel merges overlapping READ ranges; conflicting POSIX locks
 *    of different processes cannot exist in the source, so merging never fails).
 *  - LEASE locks are not restored (a lease is a break-notification contract with the
 *    original opener and needs the file to be unopened elsewhere); they are reported.
 */
import type { Checkpoint, FdRecord, FileRecord, LockRecord } from '../image/model.js';

export class RestorePlanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RestorePlanError';
  }
}

export interface PlannedFile {
  readonly file: FileRecord;
  /** fd numbers to place this description at; the first is the one locks go through */
  readonly fds: readonly number[];
  /** the recorded (pid, fd) behind each planned number, for reports */
  readonly from: readonly { readonly pid: number; readonly fd: number }[];
}

export interface PlannedLock {
  readonly lock: LockRecord;
  readonly file: FileRecord;
  /** the fd number (in the restored process) the lock is taken through */
  readonly fd: number;
}

export interface NotRestored {
  readonly lock: LockRecord;
  readonly path: string;
  readonly reason: string;
}

export interface RestorePlan {
  readonly primaryPid: number;
  readonly pids: readonly number[];
  readonly files: readonly PlannedFile[];
  readonly locks: readonly PlannedLock[];
  readonly notRestored: readonly NotRestored[];
}

const STDIO_MAX = 2;

export function planRestore(ckpt: Checkpoint, opts: { pids?: readonly number[] } = {}): RestorePlan {
  // Everything below is linear in processes + fds: a checkpoint of a pre-fork server with tens
  // of thousands of workers must not make the shim spin (the fuzzer's "huge" family).
  const order = [...new Set([...ckpt.processes.map((p) => p.pid), ...ckpt.fds.map((f) => f.pid)])];
  const known = new Set(order);
  let pids: number[];
  if (opts.pids && opts.pids.length > 0) {
    for (const p of opts.pids) if (!known.has(p)) throw new RestorePlanError(`--pid ${p} is not a process of this checkpoint (recorded: ${order.slice(0, 20).join(', ') || 'none'}${order.length > 20 ? `, … ${order.length} in all` : ''})`);
    const wanted = new Set(opts.pids);
    pids = order.filter((p) => wanted.has(p));
  } else {
    pids = order;
  }
  const selected = new Set(pids);
  const primaryPid = selected.has(ckpt.source.rootPid) ? ckpt.source.rootPid : (pids[0] ?? ckpt.source.rootPid);
  const procOrder = [primaryPid, ...pids.filter((p) => p !== primaryPid)];

  const filesById = new Map<number, FileRecord>();
  for (const f of ckpt.files) {
    if (filesById.has(f.id)) throw new RestorePlanError(`file id ${f.id} appears twice in the checkpoint`);
    filesById.set(f.id, f);
  }

  const placed = new Map<number, { fds: number[]; from: { pid: number; fd: number }[] }>();
  const used = new Set<number>();
  const spill: { fileId: number; pid: number; fd: number }[] = [];
  let maxFd = STDIO_MAX;
  for (const r of ckpt.fds) if (selected.has(r.pid)) maxFd = Math.max(maxFd, r.fd);

  const fdsOf = new Map<number, FdRecord[]>();
  for (const r of ckpt.fds) {
    if (!selected.has(r.pid)) continue;
    const list = fdsOf.get(r.pid);
    if (list) list.push(r); else fdsOf.set(r.pid, [r]);
  }
  for (const pid of procOrder) {
    const fds = (fdsOf.get(pid) ?? []).sort((a, b) => a.fd - b.fd);
    for (const r of fds) {
      if (!filesById.has(r.fileId)) throw new RestorePlanError(`fd ${r.fd} of pid ${r.pid} refers to unknown file id ${r.fileId}`);
      const entry = placed.get(r.fileId);
      if (pid !== primaryPid && entry) continue; // description already recreated
      if (r.fd <= STDIO_MAX || used.has(r.fd)) {
        if (!entry) spill.push({ fileId: r.fileId, pid, fd: r.fd });
        continue;
      }
      used.add(r.fd);
      if (entry) { entry.fds.push(r.fd); entry.from.push({ pid, fd: r.fd }); }
      else placed.set(r.fileId, { fds: [r.fd], from: [{ pid, fd: r.fd }] });
    }
  }
  let next = maxFd + 1;
  for (const s of spill) {
    if (placed.has(s.fileId)) continue;
    while (used.has(next)) next++;
    used.add(next);
    placed.set(s.fileId, { fds: [next], from: [{ pid: s.pid, fd: s.fd }] });
  }

  const files: PlannedFile[] = [];
  for (const [fileId, e] of placed) files.push({ file: filesById.get(fileId)!, fds: e.fds, from: e.from });
  files.sort((a, b) => a.fds[0]! - b.fds[0]!);

  const locks: PlannedLock[] = [];
  const notRestored: NotRestored[] = [];
  const seen = new Set<string>();
  for (const l of ckpt.locks) {
    const file = filesById.get(l.fileId);
    if (!file) throw new RestorePlanError(`a ${l.kind} lock of pid ${l.pid} fd ${l.fd} refers to unknown file id ${l.fileId}`);
    const owned = l.kind === 'POSIX' ? selected.has(l.pid) : placed.has(l.fileId);
    if (!owned) continue;
    if (l.kind === 'LEASE') {
      notRestored.push({ lock: l, path: file.path, reason: 'leases are not restorable: a lease is tied to the original opener and is broken by any other open of the file' });
      continue;
    }
    const p = placed.get(l.fileId);
    if (!p) {
      notRestored.push({ lock: l, path: file.path, reason: `no fd of a selected process holds the description the lock was taken through (file id ${l.fileId})` });
      continue;
    }
    // one entry per lock; identical POSIX locks of merged processes collapse to one
    // (a file imported from CRIU images has no inode number, ino 0: its path identifies it)
    const where = file.ino === 0n ? `path:${file.path}` : `${file.dev.major}:${file.dev.minor}:${file.ino}`;
    const key = `${l.kind}|${l.kind === 'POSIX' ? where : l.fileId}|${l.type}|${l.start}|${l.end}`;
    if (seen.has(key)) continue;
    seen.add(key);
    locks.push({ lock: l, file, fd: p.fds[0]! });
  }
  return { primaryPid, pids, files, locks, notRestored };
}

/** Every fd number the plan will occupy. */
export function plannedFdNumbers(plan: RestorePlan): number[] {
  return plan.files.flatMap((f) => f.fds).sort((a, b) => a - b);
}

/**
 * The kernel refuses every fd number at or above RLIMIT_NOFILE (dup2/dup3: EBADF, F_DUPFD:
 * EINVAL), and the restore keeps `spare` descriptors of its own (the directory fd of --root,
 * descriptions received from the vault) above the first free number after the highest
 * planned one. A checkpoint that records fd 1048575, or 2^31-1, or spills past the limit, is
 * therefore refused here, before anything is reserved or opened, with what to raise; without
 * this check the shim failed half-way with "fcntl(F_DUPFD) failed: EINVAL".
 */
export function checkFdLimit(plan: RestorePlan, limit: number, spare = 1): void {
  let worst: { n: number; f: PlannedFile; i: number } | undefined;
  for (const f of plan.files) {
    f.fds.forEach((n, i) => { if (!worst || n > worst.n) worst = { n, f, i }; });
  }
  if (!worst) return;
  const { n, f, i } = worst;
  const needed = n + 2 + spare; // highest planned fd, one free number after it, then the spares
  if (needed <= limit) return;
  const from = f.from[i]!;
  throw new RestorePlanError(
    `fd ${n} (recorded as fd ${from.fd} of pid ${from.pid}, ${JSON.stringify(f.file.path)}) cannot be placed: this process's open-file limit `
    + `(RLIMIT_NOFILE) is ${limit}, the restore needs fd numbers up to ${needed - 1}; raise the container's nofile limit (ulimit -n) to at least ${needed}`,
  );
}
