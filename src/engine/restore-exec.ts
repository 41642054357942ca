/**
 * The restore's last step: hand the process over to the program, with every restored fd at its
 * number and every lock held.
 *
 * Usually (no target number collides with Node.js's own fds) that is: clear close-on-exec on the
 * restored fds and on 0–2, add LOCKMIG_FDS, execve.
 *
 * When target numbers collide with the runtime's own fds (Node.js holds 3..~17 from its first
 * instruction: the epoll, eventfd and signal-pipe fds of its event loops), the restore left those
 * descriptions on temporary numbers (RestoreResult.deferred) and the main thread runs on a private
 * fd table (unshare(CLONE_FILES), done by the caller before the restore): liblockmig's
 * lm_place_exec then moves them onto their numbers, closes the temporaries, re-takes the POSIX
 * locks that closing dropped and execs, all in one native call during which no JavaScript runs.
 * If another process takes one of those POSIX locks in the few microseconds between the close and
 * the re-take, the call puts everything back; this module waits for the lock (until the timeout)
 * and tries again.
 */
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatRange, type LockRecord } from '../image/model.js';
import {
  setCloexec, clearStdioCloexec, execve, lseek, dupAbove, closeQuiet, SyscallError, nativeLib, resetIgnoredSignals,
  F_SETLK, F_RDLCK, F_WRLCK, SEEK_SET, type NativeLock,
} from '../sys/index.js';
import { memfdInheritable, trySetLock } from './restore-sys.js';
import { ENV_FDS, ENV_FDS_FD, MAX_ENV_VALUE } from './envfds.js';
import { LockTimeout } from './restore-errors.js';
import { findHolders } from './restore-holder.js';
import { resolveCommand, ENV_RESERVED, type RestoreResult, type RestoreLog } from './restore.js';

export interface ExecOptions {
  /** how long to wait when a re-taken POSIX lock was lost to another process (see the file comment) */
  readonly timeoutMs: number;
  readonly logger?: RestoreLog;
}

function envList(env: Readonly<Record<string, string | undefined>>): string[] {
  return Object.entries(env).filter(([k, v]) => v !== undefined && k !== ENV_RESERVED).map(([k, v]) => `${k}=${v}`);
}

/** The program's environment: `env` plus LOCKMIG_FDS (or LOCKMIG_FDS_FD naming a memfd when the list is too long). */
function programEnv(result: RestoreResult, env: Readonly<Record<string, string | undefined>>): string[] {
  let extra: Record<string, string | undefined> = result.env;
  if (result.envValue.length > MAX_ENV_VALUE) {
    // too large for one environment string (execve: E2BIG): hand the list over in a memfd
    const mfd = memfdInheritable('lockmig-fds');
    const buf = Buffer.from(result.envValue, 'utf8');
    for (let off = 0; off < buf.length;) off += fs.writeSync(mfd, buf, off, buf.length - off, off);
    lseek(mfd, 0n, SEEK_SET);
    extra = { ...result.env, [ENV_FDS]: undefined, [ENV_FDS_FD]: String(mfd) };
  }
  return envList({ ...env, ...extra });
}

const lenOf = (l: Pick<LockRecord, 'start' | 'end'>): bigint => (l.end === 'EOF' ? 0n : l.end - l.start + 1n);
const EAGAIN = 11;
const EACCES = 13;

/**
 * Hand the restored process over to `argv`. Never returns: execve replaces the process, and
 * every failure throws (SyscallError for execve/dup3, LockTimeout when a re-taken POSIX lock
 * stays held elsewhere past the timeout). Call it right after restoreLocks: nothing may open or
 * close these files in between (closing any fd of a file drops this process's POSIX locks).
 */
export async function execRestored(result: RestoreResult, argv: readonly string[], env: Readonly<Record<string, string | undefined>>, opts: ExecOptions): Promise<never> {
  if (argv.length === 0) throw new Error('execRestored: no command given');
  const exe = resolveCommand(argv[0]!, env.PATH ?? undefined);
  if (exe === null) throw new SyscallError('execve', 2 /* ENOENT */, { path: argv[0] }, `command not found: ${argv[0]}`);
  const late = result.deferred;
  const lateTargets = new Set(late?.moves.map(([, to]) => to) ?? []);
  for (const f of result.fds) if (!lateTargets.has(f.fd)) setCloexec(f.fd, false);
  clearStdioCloexec();
  const envp = programEnv(result, env);
  const native = nativeLib();

  if (!late) {
    if (native) {
      const f = native.placeAndExec([], [], [], exe, argv, envp);
      throw new SyscallError('execve', f.errno, { path: exe });
    }
    resetIgnoredSignals();
    return execve(exe, argv, envp);
  }
  if (!native) throw new Error('restore: fd numbers were deferred to the exec step, but liblockmig is not loaded');

  // copies of what the target numbers hold now (the runtime's fds), put back if the step fails
  const above = Math.max(...late.moves.flatMap(([a, b]) => [a, b])) + 1;
  const saved = late.moves.map(([, to]) => [dupAbove(to, above, true), to] as const);
  const locks: NativeLock[] = late.retake.map((r) => ({
    fd: r.fd, cmd: F_SETLK,
    lock: { type: r.lock.type === 'WRITE' ? F_WRLCK : F_RDLCK, whence: SEEK_SET, start: r.lock.start, len: lenOf(r.lock), pid: 0 },
  }));
  const deadline = performance.now() + opts.timeoutMs;
  try {
    for (let attempt = 1; ; attempt++) {
      const f = native.placeAndExec(late.moves, saved, locks, exe, argv, envp);
      // back here: every fd is where it was before the call (and the re-taken POSIX locks are gone)
      if (f.step === 'exec') throw new SyscallError('execve', f.errno, { path: exe });
      if (f.step === 'move') throw new SyscallError('dup3', f.errno, { oldfd: late.moves[f.index]?.[0], newfd: late.moves[f.index]?.[1] });
      const r = late.retake[f.index]!;
      if (f.errno !== EAGAIN && f.errno !== EACCES) throw new SyscallError('F_SETLK', f.errno, { fd: r.fd, path: r.path });
      opts.logger?.info('a POSIX lock was taken by another process while its fd was moved into place; waiting to take it again', {
        path: r.path, range: formatRange(r.lock), attempt,
      });
      await retake(late.retake, deadline);
    }
  } finally {
    for (const [copy] of saved) closeQuiet(copy);
  }
}

/** Take every lock of `items` again through its current fd, waiting (1 → 20 ms polls) until `deadline`. */
async function retake(items: NonNullable<RestoreResult['deferred']>['retake'], deadline: number): Promise<void> {
  const start = performance.now();
  let left = [...items];
  let delay = 1;
  for (;;) {
    left = left.filter((r) => {
      const e = trySetLock(r.nowFd, F_SETLK, r.lock.type === 'WRITE' ? F_WRLCK : F_RDLCK, r.lock.start, lenOf(r.lock));
      if (e === 0) return false;
      if (e === EAGAIN || e === EACCES) return true;
      throw new SyscallError('F_SETLK', e, { fd: r.nowFd, path: r.path });
    });
    if (left.length === 0) return;
    if (performance.now() >= deadline) {
      const first = left[0]!;
      const ino = fs.fstatSync(first.nowFd, { bigint: true }).ino;
      throw new LockTimeout({
        path: first.path, kind: 'POSIX', type: first.lock.type, range: formatRange(first.lock),
        holders: findHolders(ino, { kind: 'POSIX', type: first.lock.type, start: first.lock.start, end: first.lock.end }),
        waitedMs: Math.round(performance.now() - start), pending: left.length,
      });
    }
    await sleep(Math.min(delay, Math.max(1, deadline - performance.now())));
    delay = Math.min(delay * 2, 20);
  }
}
