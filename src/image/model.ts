/**
 * The in-memory form of a lock checkpoint: what a dump produces, what the image files
 * hold, and what a restore consumes. Every other layer (engine, shim, handover vault,
 * agent) speaks these types; the on-disk encoding lives beside this file.
 *
 * 64-bit quantities (offsets, lock ranges, inode numbers) are bigint end to end.
 */

export type LockKind = 'POSIX' | 'FLOCK' | 'OFD' | 'LEASE';
export type LockType = 'READ' | 'WRITE';

/** Lock kinds as CRIU numbers them in file_lock_entry.flag (criu/include/file-lock.h). */
export const CRIU_FL: Readonly<Record<LockKind, number>> = { POSIX: 1, FLOCK: 2, OFD: 4, LEASE: 8 };
/** Lock types as file_lock_entry.type carries them (F_RDLCK / F_WRLCK). */
export const CRIU_LOCK_TYPE: Readonly<Record<LockType, number>> = { READ: 0, WRITE: 1 };

/** Where a process was seen: its pid in the dumping (host) pid namespace. */
export interface ProcessRecord {
  readonly pid: number;
  readonly ppid: number;
  /** pid inside the innermost pid namespace (NSpid last field), for display. */
  readonly nsPid: number;
  readonly comm: string;
  /** cgroup v2 path (or v1 name=systemd path) of the process, for identity checks. */
  readonly cgroup: string;
}

/** An open file, as reg_file_entry describes it. One per open file description. */
export interface FileRecord {
  /** unique within the checkpoint; referenced by fds and locks */
  readonly id: number;
  /** absolute path as the owning process sees it (its mount namespace) */
  readonly path: string;
  /** open flags from fdinfo `flags:` (octal there), without O_CLOEXEC (that is per fd) */
  readonly flags: number;
  /** file position from fdinfo `pos:` */
  readonly pos: bigint;
  readonly mntId: number;
  /** st_dev as the kernel reports in /proc/locks maj:min (superblock device); 0:0 when unknown (imported from CRIU without its mount table) */
  readonly dev: { readonly major: number; readonly minor: number };
  /** inode number; 0n when the source did not record it (CRIU images do not: see docs/criu.md) */
  readonly ino: bigint;
  /** mount point (in the process's mount namespace) that holds the file, and the path below it; both '' when unknown */
  readonly mountPoint: string;
  readonly relPath: string;
}

/** One file descriptor of one process, as fdinfo_entry describes it. */
export interface FdRecord {
  readonly pid: number;
  readonly fd: number;
  /** FileRecord.id of the open file description behind this fd */
  readonly fileId: number;
  readonly cloexec: boolean;
}

/** One lock. start/end are inclusive byte offsets; end 'EOF' means "to the end, and beyond". */
export interface LockRecord {
  readonly kind: LockKind;
  readonly type: LockType;
  readonly start: bigint;
  readonly end: bigint | 'EOF';
  /**
   * POSIX: the owning process. OFD/FLOCK/LEASE: the first process (in dump order) that
   * holds an fd on the description; the lock belongs to the description, not the pid.
   */
  readonly pid: number;
  /** an fd of `pid` on which the lock was seen (the one the restore re-takes it through) */
  readonly fd: number;
  /** FileRecord.id of the description (OFD/FLOCK: the owner; POSIX: the one used to set it) */
  readonly fileId: number;
}

/** An fd that was looked at but cannot be restored by path, with the reason. */
export interface SkippedFd {
  readonly pid: number;
  readonly fd: number;
  /** readlink of /proc/<pid>/fd/<fd> */
  readonly target: string;
  readonly reason: 'deleted' | 'socket' | 'pipe' | 'anon_inode' | 'memfd' | 'unreachable' | 'other';
  readonly message: string;
  /** true when the fd carries a lock (so the lock cannot move by path) */
  readonly locked: boolean;
}

export interface SourceIdentity {
  readonly hostname: string;
  readonly kernel: string;
  /** root pid of the dumped tree */
  readonly rootPid: number;
  /** Kubernetes identity when dumped by the agent */
  readonly pod?: { readonly namespace: string; readonly name: string; readonly uid: string; readonly containers?: readonly string[] };
}

/**
 * Where a checkpoint that lockmig did not dump itself came from (src/image/criu/): a CRIU image
 * directory, or a container checkpoint archive (kubelet/CRI-O, Podman, containerd) holding one.
 */
export interface CheckpointOrigin {
  readonly kind: 'criu-dir' | 'archive';
  /** the directory or archive file as it was given */
  readonly path: string;
  /** inventory.img img_version */
  readonly criuImgVersion: number;
  /** archives: how the tar was compressed */
  readonly compression?: 'none' | 'gzip' | 'zstd';
  /** archives: the engine named by spec.dump (CRI-O, Podman, containerd) */
  readonly engine?: string;
  /** archives: the container as config.dump / spec.dump name it */
  readonly container?: { readonly id?: string; readonly name?: string };
}

export interface Checkpoint {
  /** manifest format version (see FORMAT_VERSION in manifest.ts) */
  readonly formatVersion: number;
  readonly createdAt: string;
  readonly source: SourceIdentity;
  /** 'fdinfo' on kernels with fdinfo lock: lines, 'proc-locks' for the fallback path, 'criu' when imported from CRIU images */
  readonly method: 'fdinfo' | 'proc-locks' | 'criu';
  /** present when the checkpoint was imported (method 'criu') */
  readonly origin?: CheckpointOrigin;
  readonly processes: readonly ProcessRecord[];
  readonly files: readonly FileRecord[];
  readonly fds: readonly FdRecord[];
  readonly locks: readonly LockRecord[];
  readonly skipped: readonly SkippedFd[];
  /**
   * Locks the dump saw but could not record (e.g. the /proc/locks fallback could not tell
   * which description holds an OFD read lock), one sentence each. Absent when there were none.
   */
  readonly warnings?: readonly string[];
}

/** Summary counts, used by `inspect`, the agent's status report and the demo. */
export function countLocks(locks: readonly LockRecord[]): Record<LockKind, number> {
  const c: Record<LockKind, number> = { POSIX: 0, FLOCK: 0, OFD: 0, LEASE: 0 };
  for (const l of locks) c[l.kind]++;
  return c;
}

/** Format an inclusive range the way /proc/locks does ("10 29", "0 EOF"). */
export function formatRange(l: Pick<LockRecord, 'start' | 'end'>): string {
  return `${l.start} ${l.end === 'EOF' ? 'EOF' : l.end}`;
}
