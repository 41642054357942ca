/**
 * liblockmig (native/lockmig.c, built into dist/native/liblockmig-<arch>.so by `npm run build`),
 * loaded with koffi, plus unshare(CLONE_FILES). See the C file for what each call does and why it
 * cannot be JavaScript.
 *
 * The library is optional: nativeLib() is null when it was not built (no C compiler), cannot be
 * loaded, or LOCKMIG_NO_NATIVE=1 is set; callers then use their fallbacks. LOCKMIG_NATIVE_LIB
 * names a library file explicitly.
 *
 * Found by walking up from this module's own location to a `native/` directory: the module may
 * be dist/src/sys/native.js or part of a bundled command (dist/src/cli/commands/restore.js), in
 * the repository, the container image or the shim bundle (app/dist/native/).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { libc, koffi, type Flock } from './libc.js';
import { SyscallError } from './errors.js';

export const NATIVE_LIB_NAME = `liblockmig-${process.arch}.so`;
const NATIVE_VERSION = 1;
const CLONE_FILES = 0x400;

/** Where the library file is, or null (LOCKMIG_NATIVE_LIB, else the nearest `native/` above this module). */
export function findNativeLib(env: NodeJS.ProcessEnv = process.env, from = path.dirname(fileURLToPath(import.meta.url))): string | null {
  if (env.LOCKMIG_NATIVE_LIB) return fs.existsSync(env.LOCKMIG_NATIVE_LIB) ? env.LOCKMIG_NATIVE_LIB : null;
  let dir = from;
  for (let i = 0; i < 6; i++) {
    for (const cand of [path.join(dir, 'native', NATIVE_LIB_NAME), path.join(dir, 'dist', 'native', NATIVE_LIB_NAME)]) {
      if (fs.existsSync(cand)) return cand;
    }
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return null;
}

/** A POSIX (or OFD) lock for lm_place_exec to take with `cmd` on `fd`. */
export interface NativeLock {
  readonly fd: number;
  readonly cmd: number;
  readonly lock: Flock;
}

/** Why lm_place_exec gave up (it undid everything first). */
export interface PlaceExecFailure {
  readonly step: 'move' | 'lock' | 'exec';
  /** index within that step (which move, which lock) */
  readonly index: number;
  readonly errno: number;
}

export interface NativeLib {
  readonly path: string;
  /**
   * dup3 each {from, to} (to loses close-on-exec), close every `from`, take `locks` with their
   * command, execve. Returns only on failure, with the fds and signal dispositions restored;
   * `saved` pairs {copy, original} put back what the targets held before.
   */
  placeAndExec(moves: readonly (readonly [number, number])[], saved: readonly (readonly [number, number])[],
    locks: readonly NativeLock[], file: string, argv: readonly string[], envp: readonly string[]): PlaceExecFailure;
  /** Start one detached thread per wait, each blocked in fcntl(fd, cmd, lock); see WaitSet. */
  startWaits(waits: readonly NativeLock[]): WaitSet;
  /**
   * For each number in `names`: the whole file dirfd/<number> (mode 'read') or its link target
   * (mode 'readlink'), in one call. Entry i is out.subarray(i ? ends[i-1] : 0, ends[i]); err[i]
   * is its errno (0 = ok).
   */
  /** fsync(2) of every fd at once, on threads (the filesystem commits them together); errno per fd, 0 = ok */
  fsyncMany(fds: readonly number[]): number[];
  /** the numeric entries of a directory (a /proc/<pid>/fd), ascending; throws SyscallError */
  listNumbers(dir: string): number[];
  readMany(dirfd: number, names: readonly number[], mode: 'read' | 'readlink' | 'readlink+stat', plain?: Int32Array, rootfd?: number): { readonly out: Buffer; readonly ends: Int32Array; readonly err: Int32Array };
}

/** Records of waits running on native threads. The memory stays referenced here until every one returned. */
export interface WaitSet {
  /** how many threads were started (fewer than asked only when pthread_create failed) */
  readonly started: number;
  /** errno of the failed pthread_create, 0 if all started */
  readonly startErrno: number;
  /** 0 not started, 1 waiting (or about to), 2 returned */
  state(i: number): 0 | 1 | 2;
  /** errno of a returned wait (0 = granted) */
  errno(i: number): number;
  /** CLOCK_MONOTONIC ns when the lock was ours: the wait returned, or the sweeper took it first (comparable with process.hrtime.bigint()) */
  doneNs(i: number): bigint;
  /** how many have returned */
  returned(): number;
}

const WAIT_SIZE = 72;
const LOCK_SIZE = 40;

function writeFlock(b: Buffer, off: number, l: Flock): void {
  b.writeInt16LE(l.type, off);
  b.writeInt16LE(l.whence, off + 2);
  b.writeBigInt64LE(l.start, off + 8);
  b.writeBigInt64LE(l.len, off + 16);
  b.writeInt32LE(l.pid, off + 24);
}

const cache: { lib?: NativeLib | null } = {};
/** wait records some native thread may still write to */
const live = new Set<Buffer>();

function load(file: string): NativeLib {
  const lib = koffi.load(file);
  const version = lib.func('int lm_version(void)');
  if (version() !== NATIVE_VERSION) throw new Error(`${file}: version ${version()}, expected ${NATIVE_VERSION}`);
  const sizeofWait = lib.func('int lm_sizeof_wait(void)');
  const sizeofLock = lib.func('int lm_sizeof_lock(void)');
  if (sizeofWait() !== WAIT_SIZE || sizeofLock() !== LOCK_SIZE) throw new Error(`${file}: record layout differs from this build`);
  const c_place = lib.func('int lm_place_exec(const int32_t *moves, int nmoves, const int32_t *saved, int nsaved, const void *locks, int nlocks, const char *path, const char **argv, const char **envp, _Out_ int32_t *out)');
  const c_start = lib.func('int lm_wait_start(void *w, int n, _Out_ int32_t *err)');
  const c_readMany = lib.func('long lm_read_many(int dirfd, const int32_t *fds, int n, int mode, void *out, int64_t cap, void *ends, void *err, void *plain, int threads, int rootfd)');
  const c_fsyncMany = lib.func('int lm_fsync_many(const int32_t *fds, int n, _Out_ int32_t *err)');
  // the reads are the kernel's work: spread them over the cores there are (at most 4)
  const readThreads = Math.max(1, Math.min(4, os.availableParallelism()));
  const c_list = lib.func('int lm_list_numbers(const char *path, _Out_ int32_t *out, int cap)');
  const readBuf: { b: Buffer } = { b: Buffer.allocUnsafe(1 << 20) };

  const pairs = (xs: readonly (readonly [number, number])[]): Int32Array => Int32Array.from(xs.flatMap(([a, b]) => [a, b]));
  const lockRecords = (locks: readonly NativeLock[], size: number): Buffer => {
    const b = Buffer.alloc(Math.max(1, locks.length) * size);
    locks.forEach((l, i) => {
      b.writeInt32LE(l.fd, i * size);
      b.writeInt32LE(l.cmd, i * size + 4);
      writeFlock(b, i * size + 8, l.lock);
    });
    return b;
  };
  return {
    path: file,
    placeAndExec(moves, saved, locks, exe, argv, envp) {
      const out = new Int32Array(3);
      c_place(pairs(moves), moves.length, pairs(saved), saved.length, lockRecords(locks, LOCK_SIZE), locks.length,
        exe, [...argv, null], [...envp, null], out);
      const step = out[0] === 1 ? 'move' : out[0] === 2 ? 'lock' : 'exec';
      return { step, index: out[1]!, errno: out[2]! };
    },
    listNumbers(dir) {
      for (let cap = 4096; ; cap *= 4) {
        const out = new Int32Array(cap);
        const n = c_list(dir, out, cap) as number;
        if (n < 0) throw new SyscallError('readdir', -n, { path: dir });
        if (n <= cap) return Array.from(out.subarray(0, n).sort());
      }
    },
    fsyncMany(fds) {
      const err = new Int32Array(fds.length);
      for (let i = 0; i < fds.length; i += 16) {
        const part = Int32Array.from(fds.slice(i, i + 16));
        const e = new Int32Array(part.length);
        c_fsyncMany(part, part.length, e);
        err.set(e, i);
      }
      return Array.from(err);
    },
    readMany(dirfd, names, mode, plain, rootfd) {
      const fds = Int32Array.from(names);
      const ends = new Int32Array(names.length);
      const err = new Int32Array(names.length);
      for (;;) {
        const b = readBuf.b;
        const m = mode === 'readlink' ? 1 : mode === 'readlink+stat' ? 2 : 0;
        const r = Number(c_readMany(dirfd, fds, names.length, m, b, b.length, ends, err, plain ?? null, readThreads, rootfd ?? -1));
        if (r === names.length) return { out: b, ends, err };
        if (r === -1) throw new SyscallError('lm_read_many', 12 /* ENOMEM */, { dirfd });
        readBuf.b = Buffer.allocUnsafe(Math.max(-r, b.length * 2));
      }
    },
    startWaits(waits) {
      const mem = lockRecords(waits, WAIT_SIZE); // same leading layout: fd, cmd, struct flock; state etc. zero
      const err = new Int32Array(1);
      const started = waits.length === 0 ? 0 : (c_start(mem, waits.length, err) as number);
      const i32 = new Int32Array(mem.buffer, mem.byteOffset, mem.length / 4);
      const set: WaitSet = {
        started, startErrno: err[0]!,
        state: (i) => (Atomics.load(i32, (i * WAIT_SIZE + 40) / 4) as 0 | 1 | 2),
        errno: (i) => mem.readInt32LE(i * WAIT_SIZE + 44),
        doneNs: (i) => {
          // the earlier of: the wait returned, liblockmig's sweeper took the lock for it
          const done = mem.readBigInt64LE(i * WAIT_SIZE + 48);
          const swept = mem.readBigInt64LE(i * WAIT_SIZE + 56);
          return swept > 0n && (done === 0n || swept < done) ? swept : done;
        },
        returned: () => {
          let n = 0;
          for (let i = 0; i < started; i++) if (Atomics.load(i32, (i * WAIT_SIZE + 40) / 4) === 2) n++;
          if (n === started) live.delete(mem);
          return n;
        },
      };
      // the threads write into `mem` until they return: keep it alive even if the caller drops the set
      if (started > 0) live.add(mem);
      return set;
    },
  };
}

/** The native library, or null (with the reason in nativeLibProblem()). Loaded once. */
export function nativeLib(env: NodeJS.ProcessEnv = process.env): NativeLib | null {
  if (cache.lib !== undefined) return cache.lib;
  if (env.LOCKMIG_NO_NATIVE === '1') { cache.lib = null; problem.text = 'disabled by LOCKMIG_NO_NATIVE=1'; return null; }
  const file = findNativeLib(env);
  if (!file) { cache.lib = null; problem.text = `${NATIVE_LIB_NAME} was not built (no C compiler at build time)`; return null; }
  try {
    cache.lib = load(file);
  } catch (err) {
    cache.lib = null;
    problem.text = `${file} cannot be loaded: ${(err as Error).message}`;
  }
  return cache.lib;
}

const problem: { text: string } = { text: '' };

/** Why nativeLib() returned null. */
export function nativeLibProblem(): string {
  return problem.text;
}

const c_unshare = libc.func('int unshare(int flags)');

/**
 * unshare(CLONE_FILES): from now on the calling thread (the main thread) has its own copy of
 * the fd table; the runtime's other threads keep the old one. POSIX locks taken afterwards belong
 * to the new table (the one that survives execve). Throws SyscallError (EPERM under a seccomp
 * profile that forbids unshare, ENOSYS, ENOMEM).
 */
export function unshareFiles(): void {
  if (c_unshare(CLONE_FILES) === -1) throw new SyscallError('unshare(CLONE_FILES)', koffi.errno());
}

const c_signal = libc.func('void *signal(int sig, void *handler)');
const SIGPIPE = 13;
const SIGXFSZ = 25; // same number on x86_64 and aarch64

/**
 * Node.js ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across execve, so a
 * program exec'd from Node would start with them ignored. Put both back to their default, as a
 * container's first process has them (the native exec step does the same).
 */
export function resetIgnoredSignals(): void {
  c_signal(SIGPIPE, null);
  c_signal(SIGXFSZ, null);
}
