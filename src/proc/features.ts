/**
 * Kernel feature probes (tested, never inferred from the version number, as CRIU's kdat does).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as sys from '../sys/index.js';

/**
 * Does /proc/<pid>/fdinfo/<fd> show `lock:` lines (Linux 4.1+, and only when the owner is
 * visible from our pid namespace)? Takes an OFD lock on a private temporary file of our own
 * and looks for it in our own fdinfo.
 */
export function probeFdinfoLocks(): boolean {
  let v = probed.get('fdinfo-locks');
  if (v === undefined) { v = runFdinfoLockProbe(); probed.set('fdinfo-locks', v); }
  return v;
}

/** Probe results for the life of the process (the kernel does not change under us). */
const probed = new Map<string, boolean>();

function runFdinfoLockProbe(): boolean {
  const dir = mkdtempSync(path.join(tmpdir(), 'lockmig-probe-'));
  try {
    const fd = sys.open(path.join(dir, 'probe'), sys.O_RDWR | sys.O_CREAT | sys.O_CLOEXEC, 0o600);
    try {
      try {
        sys.fcntlLock(fd, sys.F_OFD_SETLK, { type: sys.F_WRLCK, whence: sys.SEEK_SET, start: 0n, len: 1n, pid: 0 });
      } catch {
        // No OFD locks (pre-3.15): fall back to a POSIX lock, which fdinfo also lists.
        sys.fcntlLock(fd, sys.F_SETLK, { type: sys.F_WRLCK, whence: sys.SEEK_SET, start: 0n, len: 1n, pid: 0 });
      }
      return /^lock:/m.test(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    } finally {
      sys.closeQuiet(fd);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
