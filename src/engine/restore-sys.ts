/**
 * The few extra system calls the restore needs that src/sys does not wrap yet, bound on
 * the libc handle src/sys exports (koffi itself is only loaded there).
 *
 * openat2(2) (syscall 437, Linux 5.6+) opens a path relative to a directory fd with
 * resolution limits enforced by the kernel: RESOLVE_BENEATH refuses any step above the
 * directory, RESOLVE_NO_SYMLINKS refuses every symlink, RESOLVE_NO_MAGICLINKS refuses
 * /proc/<pid>/fd style links. The restore opens paths it has already resolved to a
 * symlink-free form, so any symlink met here was swapped in after validation.
 */
import { libc, koffi, SyscallError, openat, closeQuiet, O_PATH, O_NOFOLLOW, O_DIRECTORY, O_CLOEXEC } from '../sys/index.js';

const SYS_OPENAT2: Readonly<Record<string, number>> = { x64: 437, arm64: 437 };

export const RESOLVE_NO_XDEV = 0x01;
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_NO_SYMLINKS = 0x04;
export const RESOLVE_BENEATH = 0x08;
export const RESOLVE_IN_ROOT = 0x10;

const OpenHow = koffi.struct('lockmig_open_how', { flags: 'uint64_t', mode: 'uint64_t', resolve: 'uint64_t' });
const sys = libc.func('long syscall(long nr, ...)');

/** Probed once per process: does this kernel have openat2? */
const state: { openat2?: boolean } = {};

export function openat2(dirfd: number, p: string, flags: number, resolve: number): number {
  const nr = SYS_OPENAT2[process.arch];
  if (nr === undefined) throw new SyscallError('openat2', 38 /* ENOSYS */, { path: p });
  const r = Number(sys(nr, 'int', dirfd, 'const char *', p, koffi.pointer(OpenHow), { flags, mode: 0, resolve }, 'size_t', 24));
  if (r === -1) throw new SyscallError('openat2', koffi.errno(), { path: p });
  return r;
}

/**
 * Open `rel` (a symlink-free path relative to the directory fd `rootFd`, '' or '.' for the
 * root itself) without following any symlink and without leaving the root.
 */
export function openBeneath(rootFd: number, rel: string, flags: number): number {
  const target = rel === '' ? '.' : rel;
  if (state.openat2 !== false) {
    try {
      const fd = openat2(rootFd, target, flags, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
      state.openat2 = true;
      return fd;
    } catch (err) {
      if (!(err instanceof SyscallError) || err.code !== 'ENOSYS') throw err;
      state.openat2 = false;
    }
  }
  // Fallback: walk the components with O_PATH|O_NOFOLLOW; a symlink component fails
  // with ENOTDIR (intermediate) or ELOOP (last, thanks to O_NOFOLLOW).
  const parts = target.split('/').filter((c) => c !== '' && c !== '.');
  let dir = rootFd;
  const opened: number[] = [];
  try {
    for (let i = 0; i < parts.length - 1; i++) {
      if (parts[i] === '..') throw new SyscallError('openat', 18 /* EXDEV */, { path: rel });
      dir = openat(dir, parts[i]!, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
      opened.push(dir);
    }
    const last = parts.length > 0 ? parts[parts.length - 1]! : '.';
    if (last === '..') throw new SyscallError('openat', 18, { path: rel });
    return openat(dir, last, flags | O_NOFOLLOW);
  } finally {
    for (const fd of opened) closeQuiet(fd);
  }
}

/** Block the thread for `ms` milliseconds (used only after the event loop is given up). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
