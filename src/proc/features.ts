/**
 * Kernel feature probes (tested, never inferred from the version number, as CRIU's kdat does).
 * Results are cached for the life of the process: the kernel does not change under us.
 */
import { readFileSync } from 'node:fs';
import * as sys from '../sys/index.js';

const probed = new Map<string, boolean>();

/**
 * Does /proc/<pid>/fdinfo/<fd> show `lock:` lines (Linux 4.1+, and only when the owner is
 * visible from our pid namespace)? Takes a lock on a private memfd of our own (no
 * filesystem needed, so it works in a read-only container) and looks for it in our fdinfo.
 */
export function probeFdinfoLocks(): boolean {
  let v = probed.get('fdinfo-locks');
  if (v === undefined) { v = runFdinfoLockProbe(); probed.set('fdinfo-locks', v); }
  return v;
}

function runFdinfoLockProbe(): boolean {
  const fd = sys.memfdCreate('lockmig-probe', sys.MFD_CLOEXEC);
  try {
    try {
      sys.fcntlLock(fd, sys.F_OFD_SETLK, { type: sys.F_WRLCK, whence: sys.SEEK_SET, start: 0n, len: 1n, pid: 0 });
    } catch {
      // No OFD locks (pre-3.15): a POSIX lock, which fdinfo lists as well.
      sys.fcntlLock(fd, sys.F_SETLK, { type: sys.F_WRLCK, whence: sys.SEEK_SET, start: 0n, len: 1n, pid: 0 });
    }
    return /^lock:/m.test(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  } finally {
    sys.closeQuiet(fd);
  }
}
