/**
 * The restore shim's side of a handover (`lockmig restore --handover SOCKET --checkpoint NAME`).
 *
 * Sequence, in the shim process (which later execs the real program, keeping its pid):
 *  1. receive every open file description of the checkpoint from the vault (SCM_RIGHTS);
 *     the OFD and flock locks on them were never released;
 *  2. the caller runs restoreLocks({received}), which places them at the recorded fd
 *     numbers synchronously before its first await;
 *  3. right after that (setImmediate), queue a blocking F_SETLKW for every POSIX lock of
 *     the plan on its final fd, wait until the kernel shows them as waiters, and tell the
 *     vault "ready": the source may be stopped now;
 *  4. when restoreLocks resolves, every lock is held: collect the POSIX grant times,
 *     confirm to the vault (it closes its copies) and report "held" with the timings.
 * If anything fails before the confirmation, the vault still holds every description and a
 * new shim can retry.
 */
import fs from 'node:fs';
import type { Checkpoint, LockRecord } from '../image/model.js';
import type { Log } from '../log/lite.js';
import { planRestore } from '../engine/restore-plan.js';
import { receiveHandover, HandoverFailed, type ReceivedHandover } from './client.js';
import { checkpointFingerprint } from './vault.js';
import { queuePosixWaits, waitUntilQueued, maxConcurrentWaits, type PosixWait } from './posix.js';
import type { PosixTiming } from './protocol.js';
import { fcntlLock, isLockBusy, F_SETLK, F_RDLCK, F_WRLCK, SEEK_SET } from '../sys/index.js';
import { nativeLib } from '../sys/native.js';

export interface ShimHandoverOptions {
  readonly socketPath: string;
  readonly checkpoint: string;
  readonly timeoutMs: number;
  readonly pids?: readonly number[];
  readonly logger?: Log;
}

export interface ShimHandover {
  /** FileRecord.id → fd on the very description the source used (ownership passes to restoreLocks) */
  readonly received: Map<number, number>;
  /** call once restoreLocks has resolved: waits for the POSIX grants, confirms, reports timings */
  confirm(): Promise<void>;
  /** pass to restoreLocks (RestoreOptions.onPlaced): where each description is until exec */
  onPlaced(where: ReadonlyMap<number, number>): void;
  readonly session: ReceivedHandover;
}

function inoOf(fd: number): bigint | null {
  try {
    return fs.fstatSync(fd, { bigint: true }).ino;
  } catch {
    return null;
  }
}

function earliest(a: bigint, b: bigint | undefined): bigint {
  return b !== undefined && b < a ? b : a;
}

/** One non-blocking F_SETLK per POSIX lock not granted yet; records when each succeeded. */
function sweep(waits: readonly PosixWait[], swept: Map<PosixWait, bigint>): void {
  for (const w of waits) {
    if (swept.has(w)) continue;
    try {
      fcntlLock(w.fd, F_SETLK, {
        type: w.lock.type === 'WRITE' ? F_WRLCK : F_RDLCK, whence: SEEK_SET, start: w.lock.start,
        len: w.lock.end === 'EOF' ? 0n : w.lock.end - w.lock.start + 1n, pid: 0,
      });
      swept.set(w, process.hrtime.bigint());
    } catch (err) {
      if (!isLockBusy(err)) throw err;
    }
  }
}

/** Steps 1 and 3 of the file comment; the caller runs restoreLocks in between and confirm() after. */
export async function receiveForRestore(ckpt: Checkpoint, o: ShimHandoverOptions): Promise<ShimHandover> {
  const log = o.logger;
  const session = await receiveHandover(o.socketPath, o.checkpoint, o.timeoutMs);
  if (session.fingerprint !== checkpointFingerprint(ckpt)) {
    session.close();
    throw new HandoverFailed(`the vault holds a different dump of ${o.checkpoint} (${session.fingerprint}) than the image (${checkpointFingerprint(ckpt)})`);
  }
  // restoreLocks owns (and on failure closes) the received fds from now on
  session.disown();
  log?.info('received descriptions from the vault', { event: 'handover-received', checkpoint: o.checkpoint, files: session.size });

  const plan = planRestore(ckpt, { pids: o.pids });
  const posix = plan.locks.filter((l) => l.lock.kind === 'POSIX');
  const waits: PosixWait[] = [];
  const swept = new Map<PosixWait, bigint>();
  let queued = new Set<PosixWait>();
  // target fd number → the fd its description is on until exec (a temporary one when the number
  // is the runtime's own: restore-exec.ts); set by restoreLocks through onPlaced
  const placement: { where: ReadonlyMap<number, number> | null } = { where: null };
  const at = (n: number): number => placement.where?.get(n) ?? n;

  const armed = new Promise<void>((resolve) => {
    // setImmediate runs after restoreLocks (called by our caller right after we return)
    // has placed every fd and yielded at its first wait.
    setImmediate(() => {
      void (async () => {
        try {
          // Only say "ready" (which lets the source be stopped) when every description is in
          // place; if restoreLocks failed before placing them, the vault keeps holding.
          if (!placement.where) {
            log?.error('the restore placed no descriptions: not telling the vault to stop the source', {});
            resolve();
            return;
          }
          const misplaced = plan.files.filter((f) => inoOf(at(f.fds[0]!)) !== f.file.ino);
          if (misplaced.length > 0) {
            log?.error('descriptions are not in place: not telling the vault to stop the source', {
              missing: misplaced.slice(0, 5).map((f) => ({ fd: f.fds[0], path: f.file.path })), count: misplaced.length,
            });
            resolve();
            return;
          }
          const items: { fd: number; lock: LockRecord; ino: bigint }[] = [];
          for (const pl of posix) {
            const fd = at(pl.fd);
            const ino = inoOf(fd);
            if (ino === null || ino !== pl.file.ino) {
              log?.warn('POSIX lock not queued: its fd is not in place', { fd: pl.fd, path: pl.file.path });
              continue;
            }
            items.push({ fd, lock: pl.lock, ino });
          }
          waits.push(...queuePosixWaits(items));
          queued = await waitUntilQueued(waits, 2000);
          if (waits.length > queued.size) {
            log?.warn('not every POSIX wait is queued in the kernel', {
              queued: queued.size, total: posix.length, concurrent: maxConcurrentWaits(),
              hint: 'without liblockmig, raise UV_THREADPOOL_SIZE for the shim (up to 200 waits are queued at once)',
            });
          }
          // The first grant means the source has gone: the other POSIX locks are (about to be)
          // free too. Take them right away from this thread instead of waiting for each worker
          // to be scheduled (or, beyond the pool, to be started at all).
          // (liblockmig's waits have a native sweeper thread doing exactly this)
          if (waits.length > 1 && !nativeLib()) {
            void Promise.race(waits.map((w) => w.done)).then(() => sweep(waits, swept));
          }
          session.ready(queued.size);
          log?.info('descriptions placed, POSIX waits queued: the source may stop', { event: 'handover-ready', queuedPosix: queued.size, posix: posix.length });
        } catch (err) {
          log?.error('could not queue POSIX waits or tell the vault', { error: (err as Error).message });
        }
        resolve();
      })();
    });
  });

  return {
    received: session,
    session,
    onPlaced(where: ReadonlyMap<number, number>): void { placement.where = where; },
    async confirm(): Promise<void> {
      await armed;
      // restoreLocks holds every lock now; the waiters were granted at the same moment or
      // are about to return (their range is ours already). Give them a moment, bounded.
      const outcomes = await Promise.race([
        Promise.all(waits.map((w) => w.done)),
        new Promise<null>((r) => setTimeout(() => r(null), 2000)),
      ]);
      const heldNs = process.hrtime.bigint();
      const timings: PosixTiming[] = waits.map((w, i) => ({
        fileId: w.lock.fileId, start: w.lock.start.toString(), end: w.lock.end === 'EOF' ? 'EOF' : w.lock.end.toString(),
        acquiredNs: earliest(outcomes?.[i]?.ok ? outcomes[i]!.acquiredNs : heldNs, swept.get(w)).toString(), queued: queued.has(w),
      }));
      await session.confirm();
      session.reportHeld(timings, heldNs);
      // when the last POSIX wait returned (CLOCK_MONOTONIC ns, comparable across processes): with
      // the source's stop time this is the POSIX window, also for a report too large for the vault
      const lastGrantNs = timings.reduce((m, t) => (BigInt(t.acquiredNs) > m ? BigInt(t.acquiredNs) : m), 0n);
      const firstGrantNs = timings.reduce((m, t) => (m === 0n || BigInt(t.acquiredNs) < m ? BigInt(t.acquiredNs) : m), 0n);
      log?.info('handover confirmed: this process alone holds the locks', {
        event: 'handover-confirmed', files: session.size, posix: timings.length, ...(timings.length > 0 ? { firstGrantNs: firstGrantNs.toString(), lastGrantNs: lastGrantNs.toString() } : {}),
      });
    },
  };
}
