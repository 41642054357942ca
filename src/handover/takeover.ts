/**
 * Take over a checkpoint's open file descriptions from the (still running) source
 * processes with pidfd_open + pidfd_getfd.
 *
 * Kernel facts this relies on (KERNEL-NOTES.md "Taking a lock over without a window"):
 * - pidfd_getfd(2) returns a new fd in *this* process on the same open file description;
 *   OFD and flock locks (and leases) belong to the description, so they stay held by the
 *   copy after every fd of the source is closed (source exit).
 * - POSIX locks belong to the process: the copy does not keep them; the target re-takes them.
 * - It needs PTRACE_MODE_ATTACH_REALCREDS over the source (root / CAP_SYS_PTRACE, Yama).
 *
 * Every copy is checked against the checkpoint (inode, and each OFD/flock lock the dump saw
 * must show on the copy's fdinfo): if the source closed or replaced an fd since the dump,
 * the take-over fails and closes what it took instead of guarding the wrong file.
 */
import fs from 'node:fs';
import type { Checkpoint, LockKind, LockRecord } from '../image/model.js';
import { pidfdOpen, pidfdGetfd, closeQuiet, SyscallError } from '../sys/index.js';

export class TakeoverError extends Error {
  readonly code: 'NO_FD' | 'STALE' | 'PERMISSION' | 'GONE';
  readonly fileId: number | undefined;
  constructor(code: TakeoverError['code'], message: string, fileId?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TakeoverError';
    this.code = code;
    this.fileId = fileId;
  }
}

/** Lock kinds that belong to the open file description and therefore move with it. */
export const DESCRIPTION_KINDS: ReadonlySet<LockKind> = new Set<LockKind>(['OFD', 'FLOCK', 'LEASE']);

export interface TakeoverPlan {
  /** fileIds whose description is taken (every recorded file) */
  readonly fileIds: readonly number[];
  /** locks that move with their description: no window */
  readonly moved: readonly LockRecord[];
  /** locks the target must re-take (POSIX) */
  readonly retaken: readonly LockRecord[];
}

/** Pure: which locks move with the descriptions and which must be re-taken. */
export function planTakeover(ckpt: Checkpoint): TakeoverPlan {
  const moved: LockRecord[] = [];
  const retaken: LockRecord[] = [];
  for (const l of ckpt.locks) (DESCRIPTION_KINDS.has(l.kind) ? moved : retaken).push(l);
  return { fileIds: ckpt.files.map((f) => f.id), moved, retaken };
}

const KIND_IN_PROC: Readonly<Record<string, LockKind>> = { OFDLCK: 'OFD', FLOCK: 'FLOCK', LEASE: 'LEASE', POSIX: 'POSIX' };

interface SeenLock { kind: LockKind; type: string; start: string; end: string }

/** The `ino:` and `lock:` lines of one of our own fds. */
function ownFdinfo(fd: number): { ino: bigint | null; locks: SeenLock[] } {
  const text = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const ino = /^ino:\s*(\d+)$/m.exec(text);
  const locks: SeenLock[] = [];
  // lock:	1: OFDLCK ADVISORY  WRITE -1 fe:00:2146451 10 29
  for (const m of text.matchAll(/^lock:\s*\d+:\s+(\S+)\s+\S+\s+(\S+)\s+-?\d+\s+\S+\s+(\d+)\s+(\d+|EOF)\s*$/gm)) {
    const kind = KIND_IN_PROC[m[1]!];
    if (kind) locks.push({ kind, type: m[2]!, start: m[3]!, end: m[4]! });
  }
  return { ino: ino ? BigInt(ino[1]!) : null, locks };
}

/**
 * Duplicate every recorded description of `ckpt` into this process. Returns fileId → fd
 * (close-on-exec). All-or-nothing: on any failure every fd taken so far is closed.
 */
export function takeOverDescriptions(ckpt: Checkpoint): Map<number, number> {
  const taken = new Map<number, number>();
  const pidfds = new Map<number, number>();
  const pidfdOf = (pid: number): number => {
    let p = pidfds.get(pid);
    if (p === undefined) {
      try {
        p = pidfdOpen(pid);
      } catch (err) {
        throw new TakeoverError('GONE', `source pid ${pid} is gone: ${(err as Error).message}`, undefined, { cause: err });
      }
      pidfds.set(pid, p);
    }
    return p;
  };
  const holdersOf = new Map<number, { pid: number; fd: number }[]>();
  for (const f of ckpt.fds) {
    const list = holdersOf.get(f.fileId) ?? [];
    list.push(f);
    holdersOf.set(f.fileId, list);
  }
  const locksOf = new Map<number, LockRecord[]>();
  for (const l of ckpt.locks) {
    if (!DESCRIPTION_KINDS.has(l.kind)) continue;
    const list = locksOf.get(l.fileId) ?? [];
    list.push(l);
    locksOf.set(l.fileId, list);
  }
  try {
    for (const file of ckpt.files) {
      const holders = holdersOf.get(file.id) ?? [];
      if (holders.length === 0) throw new TakeoverError('NO_FD', `file ${file.id} (${file.path}) has no recorded fd`, file.id);
      let fd: number | undefined;
      let lastErr: unknown;
      for (const h of holders) {
        try {
          fd = pidfdGetfd(pidfdOf(h.pid), h.fd);
          break;
        } catch (err) {
          lastErr = err;
          if (err instanceof SyscallError && err.code === 'EPERM') {
            throw new TakeoverError('PERMISSION', `no ptrace access to pid ${h.pid} (need root or CAP_SYS_PTRACE): ${err.message}`, file.id, { cause: err });
          }
        }
      }
      if (fd === undefined) {
        throw new TakeoverError('STALE', `cannot take fd of ${file.path} (file ${file.id}) from any recorded holder: ${(lastErr as Error)?.message}`, file.id, { cause: lastErr });
      }
      taken.set(file.id, fd);
      const info = ownFdinfo(fd);
      if (info.ino !== null && info.ino !== file.ino) {
        throw new TakeoverError('STALE', `fd for ${file.path} now refers to inode ${info.ino}, the checkpoint recorded ${file.ino}`, file.id);
      }
      for (const l of locksOf.get(file.id) ?? []) {
        const end = l.end === 'EOF' ? 'EOF' : l.end.toString();
        const ok = info.locks.some((s) => s.kind === l.kind && s.type === l.type && s.start === l.start.toString() && s.end === end);
        if (!ok) throw new TakeoverError('STALE', `${l.kind} ${l.type} lock ${l.start}-${end} on ${file.path} is no longer held by the source`, file.id);
      }
    }
    return taken;
  } catch (err) {
    for (const fd of taken.values()) closeQuiet(fd);
    throw err;
  } finally {
    for (const p of pidfds.values()) closeQuiet(p);
  }
}
