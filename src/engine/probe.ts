/**
 * Non-destructive lock probes for the /proc/locks fallback (kernels whose fdinfo has no
 * `lock:` lines). The only calls used are read-only:
 *
 * - pidfd_getfd gives us a second fd on the target's open file description. Closing it
 *   later cannot release the target's OFD/flock locks (the target still holds the
 *   description) nor its POSIX locks (POSIX locks are released only by their owner
 *   closing an fd; we own none on these files).
 * - F_OFD_GETLK from that fd reports the first lock that would conflict with a lock
 *   owned by *that description*: locks the description itself holds never conflict.
 *
 * No probe ever sets or unlocks anything on a live description (CRIU's pre-4.1 probe
 * re-set the lock and turned WRITE into READ). flock(2) has no query call, so flock locks
 * are never probed (see dump-proclocks.ts).
 */
import * as sys from '../sys/index.js';
import { DumpError } from './dump-errors.js';

/** A handle on another process's open file description, obtained with pidfd_getfd. */
export interface BorrowedFd {
  readonly fd: number;
  close(): void;
}

export function borrowFd(pid: number, fd: number): BorrowedFd {
  let pidfd: number;
  try {
    pidfd = sys.pidfdOpen(pid);
  } catch (err) {
    throw new DumpError('PROBE', `cannot probe locks of pid ${pid}: pidfd_open failed (${(err as Error).message})`, { cause: err });
  }
  try {
    const dup = sys.pidfdGetfd(pidfd, fd);
    return { fd: dup, close: () => sys.closeQuiet(dup) };
  } catch (err) {
    throw new DumpError('PROBE', `cannot probe locks of pid ${pid} fd ${fd}: pidfd_getfd failed (${(err as Error).message})`, { cause: err });
  } finally {
    sys.closeQuiet(pidfd);
  }
}

/**
 * Would a WRITE lock on [start, start+len) by the description behind `fd` conflict with
 * anything? false means every lock in the range belongs to that description.
 */
export function ofdRangeConflicts(fd: number, start: bigint, len: bigint): boolean {
  const r = sys.fcntlLock(fd, sys.F_OFD_GETLK, { type: sys.F_WRLCK, whence: sys.SEEK_SET, start, len, pid: 0 });
  return r.type !== sys.F_UNLCK;
}

/** The lock F_OFD_GETLK reports as the first conflict, or null when nothing conflicts. */
export interface ProbeConflict {
  readonly type: 'READ' | 'WRITE';
  readonly start: bigint;
  readonly end: bigint | 'EOF';
}

/** F_OFD_GETLK for a WRITE lock on [start, start+len) from the description behind `fd`. */
export function ofdFirstConflict(fd: number, start: bigint, len: bigint): ProbeConflict | null {
  const r = sys.fcntlLock(fd, sys.F_OFD_GETLK, { type: sys.F_WRLCK, whence: sys.SEEK_SET, start, len, pid: 0 });
  if (r.type === sys.F_UNLCK) return null;
  return { type: r.type === sys.F_WRLCK ? 'WRITE' : 'READ', start: r.start, end: r.len === 0n ? 'EOF' : r.start + r.len - 1n };
}
