/**
 * POSIX locks cannot move with a description: they belong to the process (the kernel's
 * owner is the files_struct, shared by every thread). So the target queues a blocking
 * F_SETLKW for each of them BEFORE the source stops, on a koffi worker thread; the kernel
 * wakes the waiter when the source's lock goes away (source exit), and the lock is granted
 * to the target process — verified in test/handover/posix.test.ts: /proc/locks shows the
 * target's pid (not a thread id), it conflicts with other processes, and survives execve.
 *
 * There is still a window: between the source releasing the lock and the woken waiter
 * taking it, another process's F_SETLK can win. It is scheduler latency (µs), measured
 * and reported, never hidden.
 *
 * koffi cannot call variadic functions asynchronously, so fcntl is bound here with a fixed
 * third pointer argument. That is ABI-safe for glibc's fcntl on x86_64 (the callee reads
 * the third argument from %rdx with va_arg and never looks at %al, as it only takes
 * integer/pointer varargs) and on aarch64 Linux (variadic and fixed arguments use the
 * same registers).
 *
 * Each waiting call occupies one libuv pool thread (UV_THREADPOOL_SIZE, default 4): waits
 * beyond that are queued in libuv, not in the kernel, and reported as not queued. Whoever
 * starts the shim for many POSIX locks should raise UV_THREADPOOL_SIZE (lockmig handover does).
 */
import fs from 'node:fs';
import { libc, FlockStruct, F_SETLKW, F_RDLCK, F_WRLCK, SEEK_SET } from '../sys/libc.js';
import { nativeLib, type NativeLib } from '../sys/native.js';
import type { LockRecord } from '../image/model.js';

const c_fcntl_lk = libc.func('int fcntl(int fd, int cmd, _Inout_ lockmig_flock *lk)');
void FlockStruct; // the struct type named in the prototype is registered by libc.ts

export interface PosixWaitOutcome {
  readonly ok: boolean;
  /** process.hrtime.bigint() (CLOCK_MONOTONIC, comparable across processes) when F_SETLKW returned */
  readonly acquiredNs: bigint;
  readonly error?: string;
}

export interface PosixWait {
  readonly lock: LockRecord;
  readonly fd: number;
  readonly ino: bigint;
  readonly done: Promise<PosixWaitOutcome>;
}

function lenOf(l: Pick<LockRecord, 'start' | 'end'>): bigint {
  return l.end === 'EOF' ? 0n : l.end - l.start + 1n;
}

/** Start a blocking F_SETLKW for `lock` through `fd` on a worker thread. Never rejects. */
export function queuePosixWait(fd: number, lock: LockRecord, ino: bigint): PosixWait {
  const done = new Promise<PosixWaitOutcome>((resolve) => {
    const lk = { l_type: lock.type === 'WRITE' ? F_WRLCK : F_RDLCK, l_whence: SEEK_SET, l_start: lock.start, l_len: lenOf(lock), l_pid: 0 };
    try {
      c_fcntl_lk.async(fd, F_SETLKW, lk, (err: unknown, r: number) => {
        const acquiredNs = process.hrtime.bigint();
        if (err) resolve({ ok: false, acquiredNs, error: String(err) });
        else if (r !== 0) resolve({ ok: false, acquiredNs, error: `F_SETLKW returned ${r}` });
        else resolve({ ok: true, acquiredNs });
      });
    } catch (err) {
      // koffi refuses more than its async-call limit at once
      resolve({ ok: false, acquiredNs: process.hrtime.bigint(), error: (err as Error).message });
    }
  });
  return { lock, fd, ino, done };
}

/**
 * How many waits are queued in the kernel at the same time. With liblockmig each wait has a
 * thread of its own: all of them. Without it (the fallback), koffi runs at most 256 asynchronous
 * calls at once (its max_async_calls default, fixed once a library is loaded) and each waiting
 * call holds a libuv worker thread: min(UV_THREADPOOL_SIZE, 200).
 */
export function maxConcurrentWaits(native: NativeLib | null = nativeLib()): number {
  if (native) return Number.MAX_SAFE_INTEGER;
  return Math.max(1, Math.min(threadPoolSize(), 200));
}

/**
 * Queue F_SETLKW for every item at once, one native thread each (liblockmig's lm_wait_start).
 * Each wait's `done` resolves when its thread returned (polled every millisecond: a thread
 * cannot call into JavaScript). Threads that could not be created resolve as failed.
 */
export function queuePosixWaitsNative(native: NativeLib, items: readonly { fd: number; lock: LockRecord; ino: bigint }[]): PosixWait[] {
  const set = native.startWaits(items.map((it) => ({
    fd: it.fd, cmd: F_SETLKW,
    lock: { type: it.lock.type === 'WRITE' ? F_WRLCK : F_RDLCK, whence: SEEK_SET, start: it.lock.start, len: lenOf(it.lock), pid: 0 },
  })));
  const resolvers: ((o: PosixWaitOutcome) => void)[] = [];
  const waits = items.map((it, i): PosixWait => ({
    lock: it.lock, fd: it.fd, ino: it.ino,
    done: new Promise<PosixWaitOutcome>((resolve) => {
      if (i >= set.started) resolve({ ok: false, acquiredNs: process.hrtime.bigint(), error: `thread not started (errno ${set.startErrno})` });
      else resolvers[i] = resolve;
    }),
  }));
  const open = new Set<number>(Array.from({ length: set.started }, (_, i) => i));
  const poll = (): void => {
    for (const i of open) {
      if (set.state(i) !== 2) continue;
      open.delete(i);
      const e = set.errno(i);
      resolvers[i]!(e === 0 ? { ok: true, acquiredNs: set.doneNs(i) } : { ok: false, acquiredNs: set.doneNs(i), error: `F_SETLKW failed: errno ${e}` });
    }
    if (open.size > 0) setTimeout(poll, 1).unref();
  };
  if (open.size > 0) setTimeout(poll, 1).unref();
  return waits;
}

/**
 * Queue F_SETLKW for every item: the first maxConcurrentWaits() at once, each further one as
 * soon as an earlier one returns (those are not queued in the kernel before the stop, and the
 * report says so).
 */
export function queuePosixWaits(items: readonly { fd: number; lock: LockRecord; ino: bigint }[], limit = maxConcurrentWaits(), native: NativeLib | null = nativeLib()): PosixWait[] {
  if (native && limit >= items.length) return queuePosixWaitsNative(native, items);
  const waits: PosixWait[] = [];
  let next = limit;
  const starters: ((w: PosixWait) => void)[] = [];
  const chain = (w: PosixWait) => {
    void w.done.then(() => {
      const start = starters[next - limit];
      if (next < items.length && start) {
        next++;
        const it = items[next - 1]!;
        const nw = queuePosixWait(it.fd, it.lock, it.ino);
        start(nw);
        chain(nw);
      }
    });
  };
  items.forEach((it, i) => {
    if (i < limit) {
      const w = queuePosixWait(it.fd, it.lock, it.ino);
      waits.push(w);
      chain(w);
    } else {
      // a deferred wait: its `done` follows the real call once a slot frees up
      let start!: (w: PosixWait) => void;
      const done = new Promise<PosixWaitOutcome>((resolve) => { start = (w) => { void w.done.then(resolve); }; });
      starters.push(start);
      waits.push({ lock: it.lock, fd: it.fd, ino: it.ino, done });
    }
  });
  return waits;
}

/** One line of /proc/locks, reduced to what the waiter bookkeeping needs. */
export interface ProcLockLine {
  readonly waiter: boolean;
  readonly kind: string;
  readonly type: string;
  readonly pid: number;
  readonly ino: bigint;
  readonly start: bigint;
  readonly end: bigint | 'EOF';
}

/**
 * Parse /proc/locks:  `1: POSIX  ADVISORY  WRITE 2163 fe:00:2146453 0 EOF`
 * and blocked waiters `1: -> POSIX  ADVISORY  WRITE 2170 fe:00:2146453 0 EOF`.
 */
export function parseProcLocks(text: string): ProcLockLine[] {
  const out: ProcLockLine[] = [];
  const re = /^\d+:\s+(->\s+)?(\S+)\s+\S+\s+(\S+)\s+(-?\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s+(\d+)\s+(\d+|EOF)\s*$/;
  for (const line of text.split('\n')) {
    const m = re.exec(line);
    if (!m) continue;
    out.push({
      waiter: m[1] !== undefined, kind: m[2]!, type: m[3]!, pid: Number(m[4]), ino: BigInt(m[5]!),
      start: BigInt(m[6]!), end: m[7] === 'EOF' ? 'EOF' : BigInt(m[7]!),
    });
  }
  return out;
}

function key(ino: bigint, start: bigint, end: bigint | 'EOF'): string {
  return `${ino}:${start}:${end}`;
}

const SYS_FCNTL: Readonly<Record<string, number>> = { x64: 72, arm64: 25 };

/**
 * fds on which a thread of this process sleeps in fcntl(fd, F_SETLKW) right now, with how
 * many threads, from /proc/self/task/<tid>/{stat,syscall}. A thread sleeps there only after
 * the kernel queued its request behind the conflicting lock. This works in any pid
 * namespace, unlike /proc/locks, which hides locks whose owner (the source, in another pod)
 * is not visible from the reader's namespace — and with them our blocked waits.
 */
export function blockedSetlkwFds(): Map<number, number> {
  const out = new Map<number, number>();
  const nr = SYS_FCNTL[process.arch];
  if (nr === undefined) return out;
  let tids: string[];
  try { tids = fs.readdirSync('/proc/self/task'); } catch { return out; }
  for (const tid of tids) {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (state !== 'S') continue;
      const f = fs.readFileSync(`/proc/self/task/${tid}/syscall`, 'utf8').trim().split(' ');
      if (Number(f[0]) !== nr || Number(f[2]) !== F_SETLKW) continue;
      const fd = Number(f[1]);
      out.set(fd, (out.get(fd) ?? 0) + 1);
    } catch { /* thread gone */ }
  }
  return out;
}

/** Which of `waits` are queued in the kernel (a thread sleeps in F_SETLKW on its fd) or already granted. */
export function queuedInKernel(waits: readonly PosixWait[], pid = process.pid): Set<PosixWait> {
  const lines = parseProcLocks(fs.readFileSync('/proc/locks', 'utf8'));
  const held = new Set(lines.filter((l) => !l.waiter && l.kind === 'POSIX' && l.pid === pid).map((l) => key(l.ino, l.start, l.end)));
  const blocked = blockedSetlkwFds();
  const out = new Set<PosixWait>();
  for (const w of waits) {
    if (held.has(key(w.ino, w.lock.start, w.lock.end))) { out.add(w); continue; }
    const n = blocked.get(w.fd) ?? 0;
    if (n > 0) { out.add(w); blocked.set(w.fd, n - 1); }
  }
  return out;
}

/** libuv's worker pool size in this process (UV_THREADPOOL_SIZE, default 4, at most 1024). */
export function threadPoolSize(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number(env.UV_THREADPOOL_SIZE);
  return Number.isInteger(n) && n > 0 ? Math.min(n, 1024) : 4;
}

/**
 * Wait (event loop free) until every wait that can be blocked in the kernel is (or is
 * already granted): all of them, or as many as the worker pool runs at once. At most
 * `timeoutMs`. Returns the ones that are.
 */
export async function waitUntilQueued(waits: readonly PosixWait[], timeoutMs: number, pid = process.pid): Promise<Set<PosixWait>> {
  const deadline = Date.now() + timeoutMs;
  const want = Math.min(waits.length, maxConcurrentWaits());
  let q = queuedInKernel(waits, pid);
  while (q.size < want && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 2));
    q = queuedInKernel(waits, pid);
  }
  return q;
}
