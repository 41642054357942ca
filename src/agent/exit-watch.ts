/**
 * When did the source's processes exit? The start of any lock-free window in a migration.
 *
 * A POSIX lock is released when its owning process exits; an OFD/flock lock when the last fd
 * of its description closes (with a handover, the vault keeps one, so never). After a dump the
 * agent opens a pidfd for every process that owned a recorded lock and polls them on a worker
 * thread (pidfd_open(2): the fd becomes readable when the process has exited). The first exit
 * of a watch is reported once, with the wall clock and CLOCK_MONOTONIC (plus the kernel's boot
 * id, so a reading on the same kernel can be compared exactly with the restore shim's own).
 * No Kubernetes imports: agent.ts turns a reading into status.agent.sourceExit.
 */
import { pidfdOpen, closeQuiet, SyscallError } from '../sys/index.js';
import { pollAsync, POLLIN, Waker } from '../sys/socket.js';
import { bootID } from '../engine/restore-state.js';

export interface ExitReading {
  /** RFC 3339 with milliseconds */
  readonly time: string;
  readonly monotonicNs: bigint;
  readonly bootID?: string;
  /** the process whose exit was seen first */
  readonly pid: number;
  /** true when the process was already gone when the watch started (the time is an upper bound) */
  readonly late: boolean;
}

interface Watch {
  readonly key: string;
  readonly pidfds: Map<number, number>; // pidfd → pid
  readonly cb: (r: ExitReading) => void;
}

export class ExitWatcher {
  private readonly watches = new Map<string, Watch>();
  private readonly waker = new Waker();
  private running = false;
  private closed = false;
  private readonly boot = bootID();

  /** Number of watches still waiting. */
  get size(): number {
    return this.watches.size;
  }

  /** Report the first exit among `pids` once through `cb`. A second watch of the same key replaces the first. */
  watch(key: string, pids: readonly number[], cb: (r: ExitReading) => void): void {
    if (this.closed) throw new Error('ExitWatcher is closed');
    this.cancel(key);
    const pidfds = new Map<number, number>();
    for (const pid of new Set(pids)) {
      try {
        pidfds.set(pidfdOpen(pid), pid);
      } catch (err) {
        if (err instanceof SyscallError && err.code === 'ESRCH') {
          for (const fd of pidfds.keys()) closeQuiet(fd);
          cb(this.reading(pid, true));
          return;
        }
        for (const fd of pidfds.keys()) closeQuiet(fd);
        throw err;
      }
    }
    if (pidfds.size === 0) return;
    this.watches.set(key, { key, pidfds, cb });
    this.waker.wake();
    void this.loop();
  }

  cancel(key: string): void {
    const w = this.watches.get(key);
    if (!w) return;
    this.watches.delete(key);
    for (const fd of w.pidfds.keys()) closeQuiet(fd);
    this.waker.wake();
  }

  close(): void {
    this.closed = true;
    for (const k of [...this.watches.keys()]) this.cancel(k);
    if (this.running) this.waker.wake(); // the loop closes the waker on its way out
    else this.waker.close();
  }

  private reading(pid: number, late: boolean): ExitReading {
    return { time: new Date().toISOString(), monotonicNs: process.hrtime.bigint(), ...(this.boot ? { bootID: this.boot } : {}), pid, late };
  }

  private async loop(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (!this.closed && this.watches.size > 0) {
        const entries = [...this.watches.values()].flatMap((w) => [...w.pidfds].map(([fd, pid]) => ({ w, fd, pid })));
        const revents = await pollAsync([{ fd: this.waker.fd, events: POLLIN }, ...entries.map((e) => ({ fd: e.fd, events: POLLIN }))], 60_000);
        const now = process.hrtime.bigint();
        if ((revents[0] ?? 0) !== 0) this.waker.drain();
        for (let i = 0; i < entries.length; i++) {
          if (((revents[i + 1] ?? 0) & POLLIN) === 0) continue;
          const { w, pid } = entries[i]!;
          if (this.watches.get(w.key) !== w) continue; // cancelled or replaced meanwhile
          this.watches.delete(w.key);
          for (const fd of w.pidfds.keys()) closeQuiet(fd);
          w.cb({ ...this.reading(pid, false), monotonicNs: now });
        }
      }
    } finally {
      this.running = false;
      if (this.closed) this.waker.close();
      else if (this.watches.size > 0) void this.loop();
    }
  }
}
