/**
 * Thin, typed wrappers over the libc calls lockmig needs, loaded with koffi.
 *
 * This is the only module that loads koffi. Every wrapper throws SyscallError on -1 and
 * never returns a tri-state integer. 64-bit values (offsets, lock ranges) travel as
 * bigint in both directions: koffi hands back a Number when the value is small enough
 * to be exact and a BigInt otherwise, and we normalise to bigint.
 */
import koffi from 'koffi';
import { SyscallError } from './errors.js';

const lib = koffi.load('libc.so.6');

// --- constants (Linux, identical on x86_64 and aarch64 unless noted) ---
export const O_RDONLY = 0o0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_ACCMODE = 0o3;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_NOCTTY = 0o400;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
export const O_DIRECTORY = 0o200000;
export const O_NOFOLLOW = 0o400000;
export const O_CLOEXEC = 0o2000000;
export const O_PATH = 0o10000000;
/** Bit in fdinfo `flags:` that the kernel sets for files opened with O_LARGEFILE (x86_64 value). */
export const O_LARGEFILE = process.arch === 'arm64' ? 0o400000 : 0o100000;

export const F_DUPFD = 0;
export const F_GETFD = 1;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const F_GETLK = 5;
export const F_SETLK = 6;
export const F_SETLKW = 7;
export const F_DUPFD_CLOEXEC = 1030;
export const F_OFD_GETLK = 36;
export const F_OFD_SETLK = 37;
export const F_OFD_SETLKW = 38;
export const FD_CLOEXEC = 1;

export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;

export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

export const KCMP_FILE = 0;

const SYS: Readonly<Record<string, Readonly<Record<string, number>>>> = {
  x64: { kcmp: 312, pidfd_open: 434, pidfd_getfd: 438, pidfd_send_signal: 424 },
  arm64: { kcmp: 272, pidfd_open: 434, pidfd_getfd: 438, pidfd_send_signal: 424 },
};
function sysno(name: string): number {
  const n = SYS[process.arch]?.[name];
  if (n === undefined) throw new Error(`syscall ${name} has no number for architecture ${process.arch}`);
  return n;
}

// --- struct flock (x86_64/aarch64: short, short, off_t, off_t, pid_t; 32 bytes) ---
export const FlockStruct = koffi.struct('lockmig_flock', {
  l_type: 'short',
  l_whence: 'short',
  l_start: 'int64_t',
  l_len: 'int64_t',
  l_pid: 'int',
});

export interface Flock {
  /** F_RDLCK, F_WRLCK or F_UNLCK */
  type: number;
  whence: number;
  start: bigint;
  /** 0 means "to end of file" (and beyond) */
  len: bigint;
  pid: number;
}

// --- raw bindings ---
const c_open = lib.func('int open(const char *path, int flags, ...)');
const c_openat = lib.func('int openat(int dirfd, const char *path, int flags, ...)');
const c_close = lib.func('int close(int fd)');
const c_dup = lib.func('int dup(int fd)');
const c_dup2 = lib.func('int dup2(int oldfd, int newfd)');
const c_dup3 = lib.func('int dup3(int oldfd, int newfd, int flags)');
const c_fcntl = lib.func('int fcntl(int fd, int cmd, ...)');
const c_flock = lib.func('int flock(int fd, int op)');
const c_lseek = lib.func('int64_t lseek(int fd, int64_t off, int whence)');
const c_execve = lib.func('int execve(const char *path, const char **argv, const char **envp)');
const c_syscall = lib.func('long syscall(long nr, ...)');
const c_getpid = lib.func('int getpid()');
// kcmp through a fixed prototype: a variadic call makes koffi parse its argument types every time
const c_kcmp = lib.func('long syscall(long nr, int pid1, int pid2, int type, unsigned long idx1, unsigned long idx2)');
const c_umask = lib.func('uint32_t umask(uint32_t mask)');
const c_memfd_create = lib.func('int memfd_create(const char *name, unsigned int flags)');

function check(ret: number, syscall: string, detail: Record<string, unknown>): number {
  if (ret === -1) throw new SyscallError(syscall, koffi.errno(), detail);
  return ret;
}
function checkBig(ret: number | bigint, syscall: string, detail: Record<string, unknown>): bigint {
  const v = BigInt(ret);
  if (v === -1n) throw new SyscallError(syscall, koffi.errno(), detail);
  return v;
}

export function open(path: string, flags: number, mode = 0o644): number {
  return check(c_open(path, flags, 'uint32_t', mode), 'open', { path });
}

export function openat(dirfd: number, path: string, flags: number, mode = 0o644): number {
  return check(c_openat(dirfd, path, flags, 'uint32_t', mode), 'openat', { dirfd, path });
}

export function close(fd: number): void {
  check(c_close(fd), 'close', { fd });
}

/** close() that ignores errors: for cleanup paths where the fd may already be gone. */
export function closeQuiet(fd: number): void {
  c_close(fd);
}

export function dup(fd: number): number {
  return check(c_dup(fd), 'dup', { fd });
}

export function dup2(oldfd: number, newfd: number): number {
  return check(c_dup2(oldfd, newfd), 'dup2', { oldfd, newfd });
}

export function dup3(oldfd: number, newfd: number, flags: number): number {
  return check(c_dup3(oldfd, newfd, flags), 'dup3', { oldfd, newfd });
}

/** F_DUPFD_CLOEXEC: duplicate to the lowest free fd ≥ minFd. */
export function dupAbove(fd: number, minFd: number, cloexec = true): number {
  return check(c_fcntl(fd, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, 'int', minFd), 'fcntl(F_DUPFD)', { fd, minFd });
}

export function getFdFlags(fd: number): number {
  return check(c_fcntl(fd, F_GETFD), 'fcntl(F_GETFD)', { fd });
}

export function setFdFlags(fd: number, flags: number): void {
  check(c_fcntl(fd, F_SETFD, 'int', flags), 'fcntl(F_SETFD)', { fd });
}

export function setCloexec(fd: number, on: boolean): void {
  const cur = getFdFlags(fd);
  const next = on ? cur | FD_CLOEXEC : cur & ~FD_CLOEXEC;
  if (next !== cur) setFdFlags(fd, next);
}

export function getFileFlags(fd: number): number {
  return check(c_fcntl(fd, F_GETFL), 'fcntl(F_GETFL)', { fd });
}

export function setFileFlags(fd: number, flags: number): void {
  check(c_fcntl(fd, F_SETFL, 'int', flags), 'fcntl(F_SETFL)', { fd });
}

const LOCK_CMD_NAMES: Readonly<Record<number, string>> = {
  [F_GETLK]: 'F_GETLK', [F_SETLK]: 'F_SETLK', [F_SETLKW]: 'F_SETLKW',
  [F_OFD_GETLK]: 'F_OFD_GETLK', [F_OFD_SETLK]: 'F_OFD_SETLK', [F_OFD_SETLKW]: 'F_OFD_SETLKW',
};

function toRaw(lk: Flock): Record<string, unknown> {
  return { l_type: lk.type, l_whence: lk.whence, l_start: lk.start, l_len: lk.len, l_pid: lk.pid };
}
function fromRaw(raw: Record<string, unknown>): Flock {
  return {
    type: Number(raw.l_type), whence: Number(raw.l_whence),
    start: BigInt(raw.l_start as number | bigint), len: BigInt(raw.l_len as number | bigint),
    pid: Number(raw.l_pid),
  };
}

/**
 * fcntl with a struct flock. For SETLK/SETLKW/OFD_SETLK*, throws SyscallError
 * (EAGAIN/EACCES when the lock is held elsewhere, EINTR if a wait was interrupted).
 * For GETLK/OFD_GETLK, returns the kernel's answer (type F_UNLCK when nothing conflicts).
 * OFD commands require pid 0 on input; F_OFD_GETLK reports pid -1 for an OFD holder.
 */
export function fcntlLock(fd: number, cmd: number, lk: Flock): Flock {
  const raw = toRaw(lk);
  const ret = c_fcntl(fd, cmd, koffi.inout(koffi.pointer(FlockStruct)), raw);
  if (ret === -1) {
    throw new SyscallError(LOCK_CMD_NAMES[cmd] ?? `fcntl(${cmd})`, koffi.errno(), {
      fd, type: lk.type, start: lk.start, len: lk.len,
    });
  }
  return fromRaw(raw);
}

/** flock(2). Throws SyscallError(EWOULDBLOCK=EAGAIN) with LOCK_NB when held elsewhere. */
export function flock(fd: number, op: number): void {
  check(c_flock(fd, op), 'flock', { fd, op });
}

export function lseek(fd: number, offset: bigint, whence: number): bigint {
  return checkBig(c_lseek(fd, offset, whence), 'lseek', { fd, offset });
}

/**
 * execve(2). Only returns by throwing. Node marks fds 0–2 close-on-exec; callers that
 * want the new program to keep its stdio must clear FD_CLOEXEC first (see clearStdioCloexec).
 */
export function execve(path: string, argv: readonly string[], envp: readonly string[]): never {
  c_execve(path, [...argv, null], [...envp, null]);
  throw new SyscallError('execve', koffi.errno(), { path });
}

export function clearStdioCloexec(): void {
  for (const fd of [0, 1, 2]) {
    try { setCloexec(fd, false); } catch { /* fd not open: nothing to keep */ }
  }
}

/**
 * kcmp(KCMP_FILE): do fd1 of pid1 and fd2 of pid2 refer to the same open file description?
 * Needs ptrace-read access to both processes (root does). Throws on errors such as EBADF.
 */
export function sameFileDescription(pid1: number, fd1: number, pid2: number, fd2: number): boolean {
  const r = Number(c_syscall(sysno('kcmp'), 'int', pid1, 'int', pid2, 'int', KCMP_FILE, 'unsigned long', fd1, 'unsigned long', fd2));
  if (r === -1) throw new SyscallError('kcmp', koffi.errno(), { pid1, fd1, pid2, fd2 });
  return r === 0;
}

/**
 * kcmp ordering result (0 equal, 1 less, 2 greater), usable as a sort key to group
 * descriptions without comparing every pair.
 */
export function kcmpFile(pid1: number, fd1: number, pid2: number, fd2: number): 0 | 1 | 2 | 3 {
  const r = Number(c_kcmp(sysno('kcmp'), pid1, pid2, KCMP_FILE, fd1, fd2));
  if (r === -1) throw new SyscallError('kcmp', koffi.errno(), { pid1, fd1, pid2, fd2 });
  return r as 0 | 1 | 2 | 3;
}

/** pidfd_open(2) (Linux 5.3+). The returned fd is close-on-exec. */
export function pidfdOpen(pid: number): number {
  return check(Number(c_syscall(sysno('pidfd_open'), 'int', pid, 'unsigned int', 0)), 'pidfd_open', { pid });
}

/**
 * pidfd_getfd(2) (Linux 5.6+): a new fd in this process on the *same open file
 * description* as `targetFd` in the pidfd's process. OFD and flock locks belong to the
 * description, so they stay held after the source exits. Needs PTRACE_MODE_ATTACH_REALCREDS.
 * The new fd is close-on-exec.
 */
export function pidfdGetfd(pidfd: number, targetFd: number): number {
  return check(
    Number(c_syscall(sysno('pidfd_getfd'), 'int', pidfd, 'int', targetFd, 'unsigned int', 0)),
    'pidfd_getfd', { pidfd, targetFd },
  );
}

export function pidfdSendSignal(pidfd: number, sig: number): void {
  check(Number(c_syscall(sysno('pidfd_send_signal'), 'int', pidfd, 'int', sig, 'void *', null, 'unsigned int', 0)),
    'pidfd_send_signal', { pidfd, sig });
}

export function getpid(): number {
  return c_getpid();
}

export const MFD_CLOEXEC = 1;

/** memfd_create(2): an anonymous in-memory file (Linux 3.17+). Without MFD_CLOEXEC an exec'd program inherits it. */
export function memfdCreate(name: string, flags: number): number {
  return check(c_memfd_create(name, flags), 'memfd_create', { name });
}

export function umask(mask: number): number {
  return c_umask(mask);
}

/** The koffi library handle, for sibling modules in src/sys that bind more calls (sockets). */
export const libc = lib;
export { koffi };
