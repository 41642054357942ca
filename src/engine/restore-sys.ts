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
import { realFs, type ResolveFs, type EntryKind } from './paths.js';
import { libc, koffi, SyscallError, openat, closeQuiet, O_PATH, O_NOFOLLOW, O_DIRECTORY, O_CLOEXEC, memfdCreate } from '../sys/index.js';

const SYS_OPENAT2: Readonly<Record<string, number>> = { x64: 437, arm64: 437 };

export const RESOLVE_NO_XDEV = 0x01;
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_NO_SYMLINKS = 0x04;
export const RESOLVE_BENEATH = 0x08;
export const RESOLVE_IN_ROOT = 0x10;

koffi.struct('lockmig_open_how', { flags: 'uint64_t', mode: 'uint64_t', resolve: 'uint64_t' });
// Fixed prototypes over variadic libc entry points: koffi re-parses the argument types of a
// variadic call on every call, which dominated a 2,000-lock restore. For integer and pointer
// arguments the x86-64 and aarch64 (Linux) calling conventions are the same either way.
const sys_openat2 = libc.func('long syscall(long nr, int dirfd, const char *path, const lockmig_open_how *how, size_t size)');
const c_fcntl_int = libc.func('int fcntl(int fd, int cmd, int arg)');
// 'lockmig_flock' is the struct type src/sys/libc.ts registers (FlockStruct)
const c_fcntl_lock = libc.func('int fcntl(int fd, int cmd, const lockmig_flock *lk)');
const c_flock = libc.func('int flock(int fd, int op)');

/** Probed once per process: does this kernel have openat2? */
const state: { openat2?: boolean; statx?: boolean } = {};

export function openat2(dirfd: number, p: string, flags: number, resolve: number): number {
  const nr = SYS_OPENAT2[process.arch];
  if (nr === undefined) throw new SyscallError('openat2', 38 /* ENOSYS */, { path: p });
  const r = Number(sys_openat2(nr, dirfd, p, { flags, mode: 0, resolve }, 24));
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

/** memfd_create(2) without MFD_CLOEXEC: an anonymous file the exec'd program inherits. */
export function memfdInheritable(name: string): number {
  return memfdCreate(name, 0);
}

/** Is `fd` open in this process? (F_GETFD, no exception on EBADF) */
export function fdIsOpen(fd: number): boolean {
  return c_fcntl_int(fd, 1 /* F_GETFD */, 0) !== -1;
}

/** F_SETFD without a read first; throws on error. */
export function setFdCloexec(fd: number, on: boolean): void {
  if (c_fcntl_int(fd, 2 /* F_SETFD */, on ? 1 : 0) === -1) throw new SyscallError('fcntl(F_SETFD)', koffi.errno(), { fd });
}

/**
 * Non-blocking set of an fcntl lock (F_SETLK or F_OFD_SETLK). Returns 0 on success or the
 * errno (EAGAIN/EACCES = held elsewhere); never throws, so a busy lock costs no exception.
 */
export function trySetLock(fd: number, cmd: number, type: number, start: bigint, len: bigint): number {
  const r = c_fcntl_lock(fd, cmd, { l_type: type, l_whence: 0, l_start: start, l_len: len, l_pid: 0 });
  return r === -1 ? koffi.errno() : 0;
}

/** flock(2) with LOCK_NB added by the caller; returns 0 or the errno (EWOULDBLOCK = held elsewhere). */
export function tryFlock(fd: number, op: number): number {
  return c_flock(fd, op) === -1 ? koffi.errno() : 0;
}

const SYS_STATX: Readonly<Record<string, number>> = { x64: 332, arm64: 291 };
const sys_statx = libc.func('long syscall(long nr, int dirfd, const char *path, int flags, unsigned int mask, void *buf)');
const statxBuf = Buffer.alloc(256);
const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
const STATX_TYPE = 1;

/**
 * lstat's file type through statx(2) (Linux 4.11+), without building a Stats object:
 * validating 2,000 paths with fs.lstatSync cost more than reopening them. Falls back to
 * the portable implementation where statx is missing.
 */
export const fastFs: ResolveFs = {
  kind(p: string): EntryKind {
    const nr = SYS_STATX[process.arch];
    if (nr === undefined || state.statx === false) return realFs.kind(p);
    const r = Number(sys_statx(nr, AT_FDCWD, p, AT_SYMLINK_NOFOLLOW, STATX_TYPE, statxBuf));
    if (r === -1) {
      const e = koffi.errno();
      if (e === 2 /* ENOENT */) return 'missing';
      if (e === 20 /* ENOTDIR */) return 'notdir';
      if (e === 38 /* ENOSYS */) { state.statx = false; return realFs.kind(p); }
      throw new SyscallError('statx', e, { path: p });
    }
    const fmt = statxBuf.readUInt16LE(28) & 0o170000;
    return fmt === 0o120000 ? 'link' : fmt === 0o040000 ? 'dir' : fmt === 0o100000 ? 'file' : 'other';
  },
  readlink: (p) => realFs.readlink(p),
};

koffi.struct('lockmig_rlimit', { cur: 'uint64_t', max: 'uint64_t' });
const c_getrlimit = libc.func('int getrlimit(int resource, _Out_ lockmig_rlimit *rlim)');
const RLIMIT_NOFILE = 7;

/**
 * getrlimit(RLIMIT_NOFILE) soft limit: every fd number must stay below it (Node.js raises it
 * to the hard limit at start-up, and an execve'd program inherits it). RLIM_INFINITY and
 * anything above 2^31 are reported as 2^31 (fd numbers are ints).
 */
export function openFileLimit(): number {
  const out: { cur?: number | bigint } = {};
  if (c_getrlimit(RLIMIT_NOFILE, out) === -1) throw new SyscallError('getrlimit', koffi.errno(), {});
  const cur = BigInt(out.cur ?? 0);
  return cur > 0x80000000n ? 0x80000000 : Number(cur);
}

const c_exit = libc.func('void _exit(int status)');

/**
 * _exit(2): leave now, without Node's exit handlers. Node joins its libuv threadpool on
 * exit, and a thread blocked in F_SETLKW (a queued POSIX wait of a handover) never
 * returns, so a normal exit would hang forever.
 */
export function exitNow(code: number): never {
  c_exit(code);
  throw new Error('unreachable: _exit returned');
}
