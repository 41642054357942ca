/**
 * Restore: reopen the recorded files at the recorded fd numbers, re-take their locks, and
 * exec the real program so it starts with the locks already held.
 *
 * Order of operations, and why:
 *  1. plan (pure, restore-plan.ts) and validate every path (paths.ts) — a refusal throws
 *     RestoreRefused before any user file is opened.
 *  2. check that the target fd numbers are free. Node.js itself holds fds 3..~20 (epoll,
 *     eventfds, signal pipes) and libuv keeps their numbers in memory, so they cannot be
 *     moved. The CLI therefore re-executes itself once with every target number already
 *     occupied by a placeholder (/dev/null, or an O_PATH fd of "/" where /dev/null does not
 *     exist), so the new Node.js allocates its internals elsewhere (`reexecReservingFds`);
 *     the restore then overwrites only placeholders. In-process callers pass
 *     `onConflict: 'remap'` to get the next free numbers instead (LOCKMIG_FDS reports them).
 *  3. open + place: every description is opened (or taken from `received`), dup3'ed to its
 *     numbers with O_CLOEXEC (so children Node may spawn meanwhile do not inherit it) and
 *     the temporary fd closed, then the offset is set. All closes happen here, BEFORE any
 *     POSIX lock is taken: closing any fd of a file drops the process's POSIX locks on it.
 *  4. locks: each lock is tried without blocking; busy ones are retried with short sleeps
 *     (1 → 20 ms, event loop free) until the deadline, then LockTimeout names the holder.
 *     Nothing is opened or closed after this point.
 *  5. execWithLocks: clear FD_CLOEXEC on the restored fds and on 0–2 (execve closes
 *     close-on-exec fds, which would drop POSIX locks and lose stdio), set LOCKMIG_FDS,
 *     execve. The same process keeps its POSIX locks; OFD/flock sit on the inherited fds.
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Checkpoint, LockRecord } from '../image/model.js';
import { formatRange } from '../image/model.js';
import {
  open, close, closeQuiet, dup2, dup3, dupAbove, lseek, getFileFlags, setCloexec,
  clearStdioCloexec, execve, SyscallError, resetIgnoredSignals,
  O_ACCMODE, O_APPEND, O_NONBLOCK, O_DIRECTORY, O_CLOEXEC, O_NOCTTY, O_PATH, O_RDONLY, O_RDWR,
  F_SETLK, F_OFD_SETLK, F_RDLCK, F_WRLCK, SEEK_SET, LOCK_SH, LOCK_EX, LOCK_NB,
} from '../sys/index.js';
import { resolveAll, normalizeAllowPrefix, type ResolvedPath } from './paths.js';
import { planRestore, plannedFdNumbers, checkFdLimit, type RestorePlan, type NotRestored } from './restore-plan.js';
import { openBeneath, memfdInheritable, fastFs, fdIsOpen, setFdCloexec, trySetLock, tryFlock, openFileLimit } from './restore-sys.js';
import { findHolders, fdLockLines } from './restore-holder.js';
import { LockTimeout, FdConflict, RestoreFailed } from './restore-errors.js';
import { ENV_FDS, ENV_FDS_FD, ENV_FDS_VERSION, FDS_FORMAT_VERSION, MAX_ENV_VALUE, formatFds, type InheritedFd } from './envfds.js';

export { RestoreRefused } from './paths.js';
export { LockTimeout, FdConflict, RestoreFailed } from './restore-errors.js';
export { RestorePlanError } from './restore-plan.js';

/** Set by the shim's first stage: fd numbers it filled with placeholders before re-exec. */
export const ENV_RESERVED = 'LOCKMIG_RESERVED_FDS';

const O_DSYNC = 0o10000;
const O_DIRECT = 0o40000;
const O_NOATIME = 0o1000000;
const O_SYNC = 0o4010000;
const O_LARGEFILE_X64 = 0o100000;
/** Open flags worth reproducing; O_CREAT/O_TRUNC/O_EXCL (never create or truncate) and fd-level bits are dropped. */
const KEEP_FLAGS = O_ACCMODE | O_APPEND | O_NONBLOCK | O_DSYNC | O_SYNC | O_DIRECT | O_NOATIME | (process.arch === 'x64' ? O_LARGEFILE_X64 : 0);

/** The logging calls restore makes; a winston Logger satisfies it. */
export interface RestoreLog {
  debug(message: string, meta?: Record<string, unknown>): unknown;
  info(message: string, meta?: Record<string, unknown>): unknown;
  warn(message: string, meta?: Record<string, unknown>): unknown;
}

export interface RestoreOptions {
  /** directory the recorded paths are resolved in (default "/") */
  readonly root?: string;
  /** allowed path prefixes (inside root); an empty list allows nothing */
  readonly allow: readonly string[];
  /** how long to wait for locks still held elsewhere; 0 = try once */
  readonly timeoutMs: number;
  /** source processes to restore (default all) */
  readonly pids?: readonly number[];
  /** FileRecord.id → fd already on that description (from the handover vault). Ownership passes to restoreLocks. */
  readonly received?: ReadonlyMap<number, number>;
  /** fd numbers filled with placeholders that may be overwritten (the shim's re-exec) */
  readonly reserved?: ReadonlySet<number>;
  /** target number already open: 'error' (default) throws FdConflict, 'remap' uses the next free numbers */
  readonly onConflict?: 'error' | 'remap';
  /**
   * Target numbers the runtime itself holds right now (Node.js's own fds), to be placed by the
   * final exec step instead (execRestored, in a private fd table): their descriptions stay on
   * temporary numbers above every target until then, and the POSIX locks on those files are
   * re-taken there. See restore-exec.ts.
   */
  readonly deferred?: ReadonlySet<number>;
  /** called once every description is open, before any lock is taken: target number → fd it is on now */
  readonly onPlaced?: (where: ReadonlyMap<number, number>) => void;
  readonly logger?: RestoreLog;
  readonly onProgress?: (phase: 'open' | 'lock', done: number, total: number) => void;
}

export interface RestoredFd {
  readonly fd: number;
  readonly recordedFd: number;
  readonly recordedPid: number;
  readonly fileId: number;
  /** path as recorded (what the program sees) */
  readonly path: string;
  /** symlink-free path it was opened through, inside root */
  readonly resolved: string;
  readonly received: boolean;
}

export interface RestoredLock {
  readonly kind: LockRecord['kind'];
  readonly type: LockRecord['type'];
  readonly start: bigint;
  readonly end: bigint | 'EOF';
  readonly fd: number;
  readonly path: string;
  readonly recordedPid: number;
  readonly recordedFd: number;
  /** 'taken' by this restore, or already 'held' on a description received from the vault */
  readonly how: 'taken' | 'held';
  readonly waitedMs: number;
}

export interface RestoreTimings {
  readonly validateMs: number;
  readonly openMs: number;
  readonly lockMs: number;
  readonly totalMs: number;
}

export interface RestoreResult {
  readonly fds: readonly RestoredFd[];
  readonly locks: readonly RestoredLock[];
  readonly notRestored: readonly NotRestored[];
  /** variables to add to the program's environment (LOCKMIG_FDS, LOCKMIG_FDS_VERSION) */
  readonly env: Readonly<Record<string, string>>;
  /** the LOCKMIG_FDS value */
  readonly envValue: string;
  readonly inherited: readonly InheritedFd[];
  readonly timings: RestoreTimings;
  /** what the final exec step still has to place (RestoreOptions.deferred), or null */
  readonly deferred: DeferredPlacement | null;
}

/** The part of a restore left to the final exec step (see RestoreOptions.deferred). */
export interface DeferredPlacement {
  /** {temporary fd, target number}: dup3 at exec time, then the temporary is closed */
  readonly moves: readonly (readonly [number, number])[];
  /**
   * POSIX locks on the files concerned (any fd of the same inode): closing the temporaries
   * drops them, so they are re-taken right after, through `fd` (their final number). `nowFd`
   * is the fd they are held through until then.
   */
  readonly retake: readonly { readonly fd: number; readonly nowFd: number; readonly lock: LockRecord; readonly path: string }[];
}

const isOpen = fdIsOpen;

function openFlags(recorded: number, isDir: boolean): number {
  if (isDir) return O_RDONLY | O_DIRECTORY | O_CLOEXEC;
  return (recorded & KEEP_FLAGS) | O_CLOEXEC | O_NOCTTY;
}

function openRecorded(rootFd: number, r: ResolvedPath, recordedFlags: number): number {
  const rel = r.resolved.replace(/^\/+/, '');
  let flags = openFlags(recordedFlags, r.isDirectory);
  for (;;) {
    try {
      return openBeneath(rootFd, rel, flags);
    } catch (err) {
      // O_NOATIME needs ownership or CAP_FOWNER; O_DIRECT is not supported everywhere.
      // Both only change performance, never lock semantics: retry without them.
      if (err instanceof SyscallError && err.code === 'EPERM' && (flags & O_NOATIME)) { flags &= ~O_NOATIME; continue; }
      if (err instanceof SyscallError && err.code === 'EINVAL' && (flags & O_DIRECT)) { flags &= ~O_DIRECT; continue; }
      throw err;
    }
  }
}

function flockLen(l: Pick<LockRecord, 'start' | 'end'>): bigint {
  return l.end === 'EOF' ? 0n : l.end - l.start + 1n;
}

const EAGAIN = 11;
const EACCES = 13;

/** One non-blocking attempt. true = held now, false = busy; anything else throws. */
function tryTake(fd: number, l: LockRecord): boolean {
  let err: number;
  if (l.kind === 'FLOCK') {
    err = tryFlock(fd, (l.type === 'WRITE' ? LOCK_EX : LOCK_SH) | LOCK_NB);
  } else {
    err = trySetLock(fd, l.kind === 'OFD' ? F_OFD_SETLK : F_SETLK, l.type === 'WRITE' ? F_WRLCK : F_RDLCK, l.start, flockLen(l));
  }
  if (err === 0) return true;
  if (err === EAGAIN || err === EACCES) return false;
  throw new SyscallError(l.kind === 'FLOCK' ? 'flock' : l.kind === 'OFD' ? 'F_OFD_SETLK' : 'F_SETLK', err, { fd, type: l.type, start: l.start, end: l.end });
}

/** Is this lock already present on our fd (a description received from the vault)? */
function heldOnFd(fd: number, l: LockRecord): boolean | null {
  const lines = fdLockLines(fd);
  if (lines === null) return null;
  const kind = l.kind === 'OFD' ? 'OFDLCK' : l.kind;
  return lines.some((x) => x.kind === kind && x.type === l.type && x.start === l.start && x.end === l.end);
}

function lowestFree(from: number, taken: Set<number>): number {
  let n = from;
  while (taken.has(n) || isOpen(n)) n++;
  return n;
}

/**
 * Recreate the checkpoint's descriptions and locks in this process. See the file comment
 * for the order of operations. On any failure every fd it placed is closed again (which
 * releases what it took) and the error is thrown: RestoreRefused, RestorePlanError,
 * FdConflict, LockTimeout or RestoreFailed.
 */
export async function restoreLocks(ckpt: Checkpoint, opts: RestoreOptions): Promise<RestoreResult> {
  const t0 = performance.now();
  const log = opts.logger;
  const root = opts.root ?? '/';
  const allow = opts.allow.map(normalizeAllowPrefix);
  const received = opts.received ?? new Map<number, number>();
  const reserved = opts.reserved ?? new Set<number>();

  // 1. plan and validate (nothing opened yet)
  const plan: RestorePlan = planRestore(ckpt, { pids: opts.pids });
  checkFdLimit(plan, openFileLimit(), 1 + received.size);
  const resolved = resolveAll(root, plan.files.filter((f) => !received.has(f.file.id)).map((f) => f.file.path), allow, fastFs);

  // 2. fd numbers
  const deferred = opts.deferred ?? new Set<number>();
  const receivedFds = new Set(received.values());
  const numbers = new Map<number, number[]>(); // fileId → target numbers
  const conflicts = plannedFdNumbers(plan).filter((n) => !reserved.has(n) && !deferred.has(n) && !receivedFds.has(n) && isOpen(n));
  if (conflicts.length > 0 && opts.onConflict !== 'remap') throw new FdConflict(conflicts);
  const conflictSet = new Set(conflicts);
  const planned = new Set(plannedFdNumbers(plan));
  const taken = new Set<number>(planned);
  let spillFrom = Math.max(2, ...planned) + 1;
  for (const f of plan.files) {
    numbers.set(f.file.id, f.fds.map((n) => {
      if (!conflictSet.has(n)) return n;
      const m = lowestFree(spillFrom, taken);
      taken.add(m);
      spillFrom = m + 1;
      return m;
    }));
  }
  const tValidated = performance.now();
  log?.debug('restore plan', { files: plan.files.length, locks: plan.locks.length, remapped: conflicts.length, deferred: deferred.size, pids: plan.pids });

  // 3. open and place
  const placed: number[] = [];
  const temps: number[] = [];
  const fds: RestoredFd[] = [];
  let rootFd = -1;
  const recv = new Map<number, number>(); // fileId → received fd, moved above every target number
  const nowFd = new Map<number, number>(); // fileId → fd the description is on until exec (its first placed number, or a temporary)
  const moves: [number, number][] = [];
  const lateInodes = new Set<string>(); // dev:ino of files with a deferred number
  const where = new Map<number, number>(); // target number → fd now
  try {
    const above = Math.max(spillFrom, ...taken) + 1;
    for (const [id, fd] of received) {
      const moved = dupAbove(fd, above, true);
      close(fd);
      recv.set(id, moved);
    }
    // keep the root's directory fd above every target number, or a dup3 would replace it
    const rawRoot = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    rootFd = dupAbove(rawRoot, above, true);
    close(rawRoot);
    let done = 0;
    for (const f of plan.files) {
      const nums = numbers.get(f.file.id)!;
      const got = recv.get(f.file.id);
      const res = resolved.get(f.file.path);
      let src: number;
      try {
        src = got ?? openRecorded(rootFd, res!, f.file.flags);
      } catch (err) {
        throw new RestoreFailed('cannot reopen', f.file.path, err);
      }
      const later = nums.filter((n) => deferred.has(n));
      let temp = -1;
      if (later.length > 0) {
        // stays above every target number until the exec step moves it
        temp = src >= above ? src : dupAbove(src, above, true);
        if (temp !== src) temps.push(temp); else temps.push(src);
        const st = fs.fstatSync(temp, { bigint: true });
        lateInodes.add(`${st.dev}:${st.ino}`);
        for (const n of later) { moves.push([temp, n]); where.set(n, temp); }
      }
      for (const n of nums) {
        if (deferred.has(n)) continue;
        if (src !== n) dup3(src, n, O_CLOEXEC);
        placed.push(n);
        where.set(n, n);
      }
      if (src !== temp) {
        if (!nums.includes(src) || deferred.has(src)) close(src);
        else setFdCloexec(src, true);
      }
      const first = nums.find((n) => !deferred.has(n)) ?? temp;
      nowFd.set(f.file.id, first);
      const isDir = res?.isDirectory ?? false;
      if (!isDir && f.file.pos !== 0n) {
        try { lseek(first, f.file.pos, SEEK_SET); } catch (err) { throw new RestoreFailed('cannot seek', f.file.path, err); }
      }
      f.fds.forEach((_, i) => fds.push({
        fd: nums[i]!, recordedFd: f.from[i]!.fd, recordedPid: f.from[i]!.pid, fileId: f.file.id,
        path: f.file.path, resolved: res?.resolved ?? f.file.path, received: got !== undefined,
      }));
      if (++done % 500 === 0) opts.onProgress?.('open', done, plan.files.length);
    }
    // placeholders that the plan did not need (should not happen) must not leak into the program
    const placedSet = new Set(placed);
    for (const n of reserved) if (!placedSet.has(n)) closeQuiet(n);
    opts.onPlaced?.(where);
    const tOpened = performance.now();

    // 4. locks
    const byFile = new Map<number, number>(); // fileId → fd the lock is held through in the program
    for (const f of plan.files) byFile.set(f.file.id, numbers.get(f.file.id)![0]!);
    const locks: RestoredLock[] = [];
    const pending: { lock: LockRecord; fd: number; finalFd: number; path: string }[] = [];
    const record = (l: LockRecord, fd: number, p: string, how: 'taken' | 'held', waitedMs: number) => locks.push({
      kind: l.kind, type: l.type, start: l.start, end: l.end, fd, path: p, recordedPid: l.pid, recordedFd: l.fd, how, waitedMs,
    });
    let n = 0;
    for (const pl of plan.locks) {
      const finalFd = byFile.get(pl.file.id)!;
      const fd = nowFd.get(pl.file.id)!;
      const l = pl.lock;
      if (received.has(pl.file.id) && l.kind !== 'POSIX' && heldOnFd(fd, l) === true) {
        record(l, finalFd, pl.file.path, 'held', 0);
        continue;
      }
      let ok: boolean;
      try { ok = tryTake(fd, l); } catch (err) { throw new RestoreFailed(`cannot take ${l.kind} ${l.type} lock ${formatRange(l)} on`, pl.file.path, err); }
      if (ok) record(l, finalFd, pl.file.path, 'taken', 0);
      else pending.push({ lock: l, fd, finalFd, path: pl.file.path });
      if (++n % 500 === 0) opts.onProgress?.('lock', n, plan.locks.length);
    }
    if (pending.length > 0) {
      log?.info('waiting for locks held elsewhere', { pending: pending.length, timeoutMs: opts.timeoutMs });
      const waitStart = performance.now();
      const deadline = waitStart + opts.timeoutMs;
      let delay = 1;
      let left = pending;
      while (left.length > 0) {
        const remaining = deadline - performance.now();
        if (remaining <= 0) {
          const first = left[0]!;
          const ino = fs.fstatSync(first.fd, { bigint: true }).ino;
          const holders = findHolders(ino, { kind: first.lock.kind, type: first.lock.type, start: first.lock.start, end: first.lock.end });
          throw new LockTimeout({
            path: first.path, kind: first.lock.kind, type: first.lock.type, range: formatRange(first.lock),
            holders, waitedMs: Math.round(performance.now() - waitStart), pending: left.length,
          });
        }
        await sleep(Math.min(delay, Math.max(1, remaining)));
        delay = Math.min(delay * 2, 20);
        const still: typeof left = [];
        for (const p of left) {
          let ok: boolean;
          try { ok = tryTake(p.fd, p.lock); } catch (err) { throw new RestoreFailed(`cannot take ${p.lock.kind} lock on`, p.path, err); }
          if (ok) record(p.lock, p.finalFd, p.path, 'taken', Math.round(performance.now() - waitStart));
          else still.push(p);
        }
        left = still;
      }
    }
    const tLocked = performance.now();

    const inherited = inheritedEntries(fds, locks);
    const envValue = formatFds(inherited);
    // POSIX locks on a file with a deferred number: closing its temporary at exec time drops
    // them (a close of any fd of the file does), so the exec step takes them again
    let late: DeferredPlacement | null = null;
    if (moves.length > 0) {
      const retake: DeferredPlacement['retake'][number][] = [];
      const inodeOf = new Map<number, string>();
      for (const pl of plan.locks) {
        if (pl.lock.kind !== 'POSIX') continue;
        const now = nowFd.get(pl.file.id)!;
        let key = inodeOf.get(now);
        if (key === undefined) {
          const st = fs.fstatSync(now, { bigint: true });
          key = `${st.dev}:${st.ino}`;
          inodeOf.set(now, key);
        }
        if (lateInodes.has(key)) retake.push({ fd: byFile.get(pl.file.id)!, nowFd: now, lock: pl.lock, path: pl.file.path });
      }
      late = { moves, retake };
    }
    const result: RestoreResult = {
      fds, locks, notRestored: plan.notRestored, inherited, envValue,
      env: { [ENV_FDS]: envValue, [ENV_FDS_VERSION]: String(FDS_FORMAT_VERSION) },
      timings: {
        validateMs: tValidated - t0, openMs: tOpened - tValidated, lockMs: tLocked - tOpened, totalMs: tLocked - t0,
      },
      deferred: late,
    };
    return result;
  } catch (err) {
    const placedSet = new Set(placed);
    for (const fd of placed) closeQuiet(fd);
    for (const fd of temps) if (!placedSet.has(fd)) closeQuiet(fd);
    for (const fd of recv.values()) if (!placedSet.has(fd)) closeQuiet(fd);
    throw err;
  } finally {
    if (rootFd >= 0) closeQuiet(rootFd);
  }
}

function inheritedEntries(fds: readonly RestoredFd[], locks: readonly RestoredLock[]): InheritedFd[] {
  const out: InheritedFd[] = [];
  const byFile = new Map<number, RestoredFd[]>();
  for (const f of fds) byFile.set(f.fileId, [...(byFile.get(f.fileId) ?? []), f]);
  const fileOfFd = new Map(fds.map((f) => [f.fd, f.fileId]));
  const locksByFile = new Map<number, RestoredLock[]>();
  for (const l of locks) {
    const id = fileOfFd.get(l.fd)!;
    locksByFile.set(id, [...(locksByFile.get(id) ?? []), l]);
  }
  for (const f of fds) {
    // OFD/flock locks belong to the description: list them on every fd of it; POSIX
    // locks on the fd they were taken through.
    const ls = (locksByFile.get(f.fileId) ?? []).filter((l) => l.kind !== 'POSIX' || l.fd === f.fd);
    if (ls.length === 0) out.push({ fd: f.fd, kind: 'NONE', path: f.path });
    for (const l of ls) out.push({ fd: f.fd, kind: l.kind as InheritedFd['kind'], type: l.type, start: l.start, end: l.end, path: f.path });
  }
  return out;
}

/** Find an executable the way execvp does (PATH search when the name has no slash). */
export function resolveCommand(cmd: string, pathVar = process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'): string | null {
  const ok = (p: string) => {
    try { fs.accessSync(p, fs.constants.X_OK); return fs.statSync(p).isFile(); } catch { return false; }
  };
  if (cmd.includes('/')) return ok(cmd) ? cmd : null;
  for (const dir of pathVar.split(':')) {
    const p = path.join(dir || '.', cmd);
    if (ok(p)) return p;
  }
  return null;
}

function envList(env: Readonly<Record<string, string | undefined>>): string[] {
  return Object.entries(env).filter(([k, v]) => v !== undefined && k !== ENV_RESERVED).map(([k, v]) => `${k}=${v}`);
}

/**
 * Hand the restored process over to `argv`: clear FD_CLOEXEC on every restored fd and on
 * 0–2, add LOCKMIG_FDS, execve. Never returns (throws SyscallError if execve fails, e.g.
 * ENOENT). Call it synchronously right after restoreLocks: nothing may open or close
 * these files in between (closing any fd of a file drops this process's POSIX locks).
 */
export function execWithLocks(result: RestoreResult, argv: readonly string[], env: Readonly<Record<string, string | undefined>>): never {
  if (argv.length === 0) throw new Error('execWithLocks: no command given');
  const exe = resolveCommand(argv[0]!, env.PATH ?? undefined);
  if (exe === null) throw new SyscallError('execve', 2 /* ENOENT */, { path: argv[0] }, `command not found: ${argv[0]}`);
  if (result.deferred) throw new Error('execWithLocks: this restore deferred fd numbers to the exec step: use execRestored (restore-exec.ts)');
  for (const f of result.fds) setCloexec(f.fd, false);
  clearStdioCloexec();
  resetIgnoredSignals();
  let extra: Record<string, string | undefined> = result.env;
  if (result.envValue.length > MAX_ENV_VALUE) {
    // too large for one environment string (execve: E2BIG): hand the list over in a memfd
    const mfd = memfdInheritable('lockmig-fds');
    const buf = Buffer.from(result.envValue, 'utf8');
    for (let off = 0; off < buf.length;) off += fs.writeSync(mfd, buf, off, buf.length - off, off);
    lseek(mfd, 0n, SEEK_SET);
    extra = { ...result.env, [ENV_FDS]: undefined, [ENV_FDS_FD]: String(mfd) };
  }
  return execve(exe, argv, envList({ ...env, ...extra }));
}

/** The command line that started this process, for re-executing it unchanged. */
function selfCommandLine(): { exe: string; argv: string[] } {
  const userArgs = process.argv.slice(2);
  try {
    const parts = fs.readFileSync('/proc/self/cmdline', 'utf8').split('\0');
    if (parts[parts.length - 1] === '') parts.pop();
    const tail = parts.slice(parts.length - userArgs.length);
    // the loader-started bundle (ld.so node main.js …) shows up here, process.execPath would not
    if (parts.length >= userArgs.length + 2 && tail.every((a, i) => a === userArgs[i])) {
      const exe = resolveCommand(parts[0]!);
      if (exe) return { exe, argv: parts };
    }
  } catch { /* no /proc: fall back below */ }
  return { exe: process.execPath, argv: [process.execPath, ...process.execArgv, process.argv[1]!, ...userArgs] };
}

/**
 * Re-execute this very command with every fd number in `fds` occupied by a placeholder,
 * so that the next Node.js start puts its own fds elsewhere. Never returns. After the
 * first dup2 this process's event loop is unusable (its fds are overwritten): only
 * synchronous code runs until execve. /dev/null is the placeholder because a libuv
 * thread that still writes to its (overwritten) eventfd gets success rather than EBADF.
 */
export function reexecReservingFds(fds: readonly number[]): never {
  const { exe, argv } = selfCommandLine();
  let ph: number;
  try { ph = open('/dev/null', O_RDWR | O_CLOEXEC); } catch { ph = open('/', O_PATH | O_DIRECTORY | O_CLOEXEC); }
  for (const n of fds) if (n !== ph) dup2(ph, n);
  if (fds.includes(ph)) setCloexec(ph, false); else closeQuiet(ph);
  clearStdioCloexec();
  const env = Object.entries(process.env).filter(([k, v]) => v !== undefined && k !== ENV_RESERVED).map(([k, v]) => `${k}=${v}`);
  return execve(exe, argv, [...env, `${ENV_RESERVED}=${fds.join(',')}`]);
}

/**
 * Occupy each of `fds` (free target numbers) with a placeholder (/dev/null, or an O_PATH fd of
 * "/"), close-on-exec, so nothing opened before the restore (the vault's socket, received
 * descriptions) lands on a number the restore needs. Pass the result as RestoreOptions.reserved.
 */
export function reservePlaceholders(fds: readonly number[]): Set<number> {
  const out = new Set<number>();
  if (fds.length === 0) return out;
  let ph: number;
  try { ph = open('/dev/null', O_RDWR | O_CLOEXEC); } catch { ph = open('/', O_PATH | O_DIRECTORY | O_CLOEXEC); }
  for (const n of fds) {
    if (n !== ph) dup3(ph, n, O_CLOEXEC);
    out.add(n);
  }
  if (!out.has(ph)) closeQuiet(ph);
  return out;
}

/**
 * The placeholders a first stage left for us (LOCKMIG_RESERVED_FDS), each verified to be
 * /dev/null or an O_PATH fd of "/" so a stray variable can never make us overwrite a
 * Node.js internal fd.
 */
export function reservedFdsFromEnv(env: Readonly<Record<string, string | undefined>> = process.env): Set<number> {
  const v = env[ENV_RESERVED];
  const out = new Set<number>();
  if (!v) return out;
  const rootSt = fs.statSync('/');
  for (const s of v.split(',')) {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 3) continue;
    try {
      const st = fs.fstatSync(n);
      const devnull = st.isCharacterDevice() && st.rdev === 259; // makedev(1, 3)
      const rootPh = st.isDirectory() && st.ino === rootSt.ino && st.dev === rootSt.dev && (getFileFlags(n) & O_PATH) !== 0;
      if (devnull || rootPh) out.add(n);
    } catch { /* not open any more */ }
  }
  return out;
}
