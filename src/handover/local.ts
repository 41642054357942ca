/**
 * The whole same-node handover, locally (what `lockmig handover` runs, and what the agent
 * does piecewise in a cluster):
 *
 *   dump PID → write the image → vault takes every locked description (pidfd_getfd)
 *   → start the target through the restore shim (in its cgroup) → the shim receives the
 *   descriptions, places them, queues F_SETLKW for POSIX locks, says "ready"
 *   → stop the source (SIGTERM, then SIGKILL after the grace period)
 *   → the shim holds everything, confirms, reports "held" and execs the command.
 *
 * OFD and flock locks never become free (the vault's copy, then the target's, hold the
 * description throughout). POSIX locks are released by the source's exit and granted to the
 * target's queued waiter: the report gives, per lock, the grant time after the stop signal
 * (an upper bound of the window) and whether the wait was queued in the kernel in time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Checkpoint, LockRecord } from '../image/model.js';
import { writeCheckpoint } from '../image/index.js';
import { dumpProcesses } from '../engine/dump.js';
import type { Logger } from '../log/logger.js';
import { pidfdOpen, pidfdSendSignal, closeQuiet } from '../sys/libc.js';
import { pollAsync, POLLIN } from '../sys/socket.js';
import { Vault, type VaultEvents } from './vault.js';
import { CgroupPathMatcher, PidMatcher, type TargetMatcher } from './auth.js';
import { findCgroupMounts } from '../proc/cgroup.js';
import { parseProcLocks } from './posix.js';

export class HandoverError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HandoverError';
  }
}

export interface LocalHandoverOptions {
  readonly pid: number;
  readonly tree?: boolean;
  readonly imageDir: string;
  readonly socketPath: string;
  /** checkpoint name in the vault (default `local/pid-<PID>`) */
  readonly name?: string;
  /** cgroup the target is started in (and must be in to receive); default: the target's pid */
  readonly targetCgroup?: string;
  /** release the descriptions if the target has not received them after this long */
  readonly timeoutMs: number;
  /** keep holding forever if the target never comes */
  readonly hold?: boolean;
  /** SIGTERM → SIGKILL grace period */
  readonly graceMs?: number;
  readonly command: readonly string[];
  /** extra `lockmig restore` options (e.g. --allow, --root) */
  readonly restoreArgs?: readonly string[];
  /** how to run lockmig (default: this Node.js and this CLI) */
  readonly lockmigArgv?: readonly string[];
  readonly logger?: Logger;
  /** target's stdio (default inherit) */
  readonly stdio?: 'inherit' | 'ignore';
  readonly onProgress?: (step: string) => void;
}

export interface RetakenLock {
  readonly lock: LockRecord;
  /** the shim's F_SETLKW was blocked in the kernel before the source was stopped */
  readonly queued: boolean;
  /** µs from the stop signal that killed the source to the target's grant: an upper bound of the window */
  readonly grantAfterStopUs: number;
  /** µs from the source's observed exit (pidfd) to the grant; negative = granted before the exit was observed */
  readonly grantAfterExitUs: number;
}

export interface LocalHandoverResult {
  readonly checkpoint: string;
  readonly targetPid: number;
  readonly sourcePids: readonly number[];
  /** OFD/flock locks: held by the vault and then the target throughout (no window) */
  readonly moved: readonly LockRecord[];
  readonly retaken: readonly RetakenLock[];
  /** stop signal → target reports every lock held */
  readonly stopToHoldMs: number;
  readonly stopSignal: 'SIGTERM' | 'SIGKILL';
  /** kernel view after the handover: every moved lock on the target's fds, every POSIX lock the target's */
  readonly verified: { readonly ok: boolean; readonly problems: readonly string[] };
  readonly timings: Readonly<Record<string, number>>;
}

function defaultLockmigArgv(): string[] {
  const main = fileURLToPath(new URL('../cli/main.js', import.meta.url));
  return [process.execPath, main];
}

function waitEvent<K extends keyof VaultEvents>(v: Vault, ev: K, child: ChildProcess | null, timeoutMs: number): Promise<VaultEvents[K][0]> {
  return new Promise((resolve, reject) => {
    const done = () => { clearTimeout(t); v.off(ev, on as never); child?.off('exit', onExit); };
    const on = (x: VaultEvents[K][0]) => { done(); resolve(x); };
    const onExit = (code: number | null, sig: string | null) => { done(); reject(new HandoverError(`the target exited (${sig ?? code}) before "${String(ev)}"`)); };
    const t = setTimeout(() => { done(); reject(new HandoverError(`no "${String(ev)}" from the target within ${timeoutMs} ms`)); }, Number.isFinite(timeoutMs) ? timeoutMs : 2 ** 31 - 1);
    v.on(ev, on as never);
    child?.once('exit', onExit);
  });
}

/** Stop every source process: SIGTERM, then SIGKILL after graceMs. Returns signal and exit times. */
export async function stopProcesses(pids: readonly number[], graceMs: number): Promise<{ signal: 'SIGTERM' | 'SIGKILL'; sentNs: bigint; killNs: bigint | null; exitNs: bigint }> {
  const fds = pids.flatMap((p) => {
    try { return [pidfdOpen(p)]; } catch { return []; }
  });
  try {
    const sentNs = process.hrtime.bigint();
    for (const fd of fds) try { pidfdSendSignal(fd, 15); } catch { /* already gone */ }
    const alive = async (ms: number) => {
      const deadline = Date.now() + ms;
      for (;;) {
        const rev = await pollAsync(fds.map((fd) => ({ fd, events: POLLIN })), Math.max(0, deadline - Date.now()));
        if (rev.every((r) => r & POLLIN)) return false;
        if (Date.now() >= deadline) return true;
      }
    };
    let killNs: bigint | null = null;
    if (fds.length > 0 && await alive(graceMs)) {
      killNs = process.hrtime.bigint();
      for (const fd of fds) try { pidfdSendSignal(fd, 9); } catch { /* gone */ }
      if (await alive(10_000)) throw new HandoverError(`source process(es) ${pids.join(',')} survived SIGKILL for 10 s`);
    }
    return { signal: killNs === null ? 'SIGTERM' : 'SIGKILL', sentNs, killNs, exitNs: process.hrtime.bigint() };
  } finally {
    for (const fd of fds) closeQuiet(fd);
  }
}

/** Check the kernel's view: the target holds every moved lock on its recorded fds and every POSIX lock. */
export function verifyTargetHolds(ckpt: Checkpoint, targetPid: number): { ok: boolean; problems: string[] } {
  const problems: string[] = [];
  const primary = ckpt.source.rootPid;
  const files = new Map(ckpt.files.map((f) => [f.id, f]));
  const kinds: Record<string, string> = { OFD: 'OFDLCK', FLOCK: 'FLOCK', POSIX: 'POSIX' };
  const procLocks = parseProcLocks(fs.readFileSync('/proc/locks', 'utf8'));
  for (const l of ckpt.locks) {
    if (l.kind === 'LEASE') continue;
    const f = files.get(l.fileId)!;
    const end = l.end === 'EOF' ? 'EOF' : l.end.toString();
    if (l.kind === 'POSIX') {
      const ok = procLocks.some((p) => !p.waiter && p.kind === 'POSIX' && p.pid === targetPid && p.ino === f.ino && p.start === l.start && String(p.end) === end);
      if (!ok) problems.push(`POSIX ${l.type} ${l.start}-${end} on ${f.path} is not held by pid ${targetPid}`);
      continue;
    }
    // the fd the lock was seen on, as restored (the primary process keeps its numbers)
    const fdRec = ckpt.fds.find((x) => x.fileId === l.fileId && x.pid === primary) ?? ckpt.fds.find((x) => x.fileId === l.fileId)!;
    let text = '';
    try { text = fs.readFileSync(`/proc/${targetPid}/fdinfo/${fdRec.fd}`, 'utf8'); } catch { /* missing */ }
    const re = new RegExp(`^lock:\\s+\\d+:\\s+${kinds[l.kind]}\\s+\\S+\\s+${l.type}\\s+-?\\d+\\s+\\S+:${f.ino}\\s+${l.start}\\s+${end}\\s*$`, 'm');
    if (!re.test(text)) problems.push(`${l.kind} ${l.type} ${l.start}-${end} on ${f.path} is not on fd ${fdRec.fd} of pid ${targetPid}`);
  }
  return { ok: problems.length === 0, problems };
}

export async function runLocalHandover(o: LocalHandoverOptions): Promise<LocalHandoverResult> {
  const log = o.logger;
  const t0 = performance.now();
  const mark: Record<string, number> = {};
  const step = (s: string) => { mark[s] = performance.now() - t0; o.onProgress?.(s); };
  const name = o.name ?? `local/pid-${o.pid}`;

  const ckpt = dumpProcesses({ pids: [o.pid], tree: o.tree ?? false, logger: log });
  step('dumped');
  writeCheckpoint(o.imageDir, ckpt);
  step('image-written');
  const sourcePids = [...new Set([...ckpt.processes.map((p) => p.pid), o.pid])];

  let cgMatcher: TargetMatcher | undefined;
  let cgProcs: string | undefined;
  if (o.targetCgroup) {
    const mnt = findCgroupMounts().cgroup2;
    if (!mnt) throw new HandoverError('--target-cgroup needs a cgroup2 mount (none in /proc/self/mounts)');
    const m = new CgroupPathMatcher(o.targetCgroup, mnt);
    cgMatcher = m;
    cgProcs = path.join(mnt, m.cgroupPath, 'cgroup.procs');
    if (!fs.existsSync(cgProcs)) throw new HandoverError(`target cgroup ${m.cgroupPath} does not exist (${cgProcs})`);
  }

  const vault = new Vault({ socketPath: o.socketPath, ...(log ? { logger: log } : {}) });
  const plan = vault.takeOver(name, ckpt, {
    ...(cgMatcher ? { matcher: cgMatcher } : {}),
    ...(o.hold ? { hold: true } : { releaseAfterMs: o.timeoutMs }),
  });
  step('taken-over');
  let child: ChildProcess | null = null;
  let sourceStopped = false;
  try {
    vault.start();
    const released = new Promise<never>((_, reject) => vault.once('released', (e) => reject(new HandoverError(`the vault released ${e.checkpoint} (${e.reason}): the target never received it`))));
    released.catch(() => { /* observed via the race below */ });

    const posixCount = plan.retaken.length;
    const argv = [
      ...(o.lockmigArgv ?? defaultLockmigArgv()), 'restore', '--image', o.imageDir,
      '--handover', o.socketPath, '--checkpoint', name,
      '--timeout', String(o.hold ? 86_400 : Math.max(1, Math.ceil(o.timeoutMs / 1000))),
      ...(o.restoreArgs ?? []), '--', ...o.command,
    ];
    const full = cgProcs ? ['sh', '-c', `echo $$ > "$0" && exec "$@"`, cgProcs, ...argv] : argv;
    child = spawn(full[0]!, full.slice(1), {
      stdio: ['ignore', o.stdio ?? 'inherit', o.stdio ?? 'inherit'], detached: true,
      env: { ...process.env, UV_THREADPOOL_SIZE: String(Math.min(1024, Math.max(4, posixCount + 4))) },
    });
    const targetPid = child.pid!;
    if (!cgMatcher) vault.setTarget(name, new PidMatcher(targetPid));
    step('target-started');

    const waitMs = o.hold ? Number.POSITIVE_INFINITY : o.timeoutMs;
    const held = waitEvent(vault, 'held', child, Number.isFinite(waitMs) ? waitMs + 60_000 : waitMs);
    held.catch(() => { /* awaited below */ });
    const ready = await Promise.race([waitEvent(vault, 'ready', child, waitMs), released]);
    step('target-ready');
    log?.info('target ready; stopping the source', { event: 'stopping-source', pids: sourcePids, queuedPosix: ready.queuedPosix });

    const stop = await stopProcesses(sourcePids, o.graceMs ?? 5000);
    sourceStopped = true;
    step('source-stopped');
    const report = await held;
    step('target-holds');
    const fatalNs = stop.killNs ?? stop.sentNs;
    const timingsOf = new Map(report.report.posix.map((p) => [`${p.fileId}:${p.start}:${p.end}`, p]));
    const retaken: RetakenLock[] = plan.retaken.map((l) => {
      const t = timingsOf.get(`${l.fileId}:${l.start}:${l.end === 'EOF' ? 'EOF' : l.end}`);
      const acq = t ? BigInt(t.acquiredNs) : BigInt(report.report.heldNs);
      return {
        lock: l, queued: t?.queued ?? false,
        grantAfterStopUs: Number(acq - fatalNs) / 1000, grantAfterExitUs: Number(acq - stop.exitNs) / 1000,
      };
    });
    // the shim execs right after reporting: give it a moment to do so before looking at its fdinfo
    const verified = await settleVerify(ckpt, targetPid);
    step('verified');
    child.unref();
    return {
      checkpoint: name, targetPid, sourcePids, moved: plan.moved, retaken,
      stopToHoldMs: Number(BigInt(report.report.heldNs) - stop.sentNs) / 1e6,
      stopSignal: stop.signal, verified, timings: mark,
    };
  } catch (err) {
    if (child && child.exitCode === null) {
      log?.error('handover failed; stopping the target', { error: (err as Error).message });
      child.kill('SIGKILL');
    }
    // The source is gone but the vault still holds its descriptions (nobody confirmed): keep
    // them (and their OFD/flock locks) until a retried shim takes them or the timeout/--hold says.
    if (sourceStopped && vault.status(name)?.state === 'held') {
      const retry = [...(o.lockmigArgv ?? defaultLockmigArgv()).slice(1), 'restore', '--image', o.imageDir,
        '--handover', o.socketPath, '--checkpoint', name, ...(o.restoreArgs ?? []), '--', ...o.command].join(' ');
      log?.error('the target failed after the source stopped; the vault keeps holding the locks for a retry', {
        event: 'awaiting-retry', checkpoint: name, retry: `lockmig ${retry.replace(/^.*main\.js /, '')}`,
        releaseAfterMs: o.hold ? null : o.timeoutMs,
      });
      o.onProgress?.('awaiting-retry');
      await new Promise<void>((resolve) => {
        vault.once('delivered', () => resolve());
        vault.once('released', () => resolve());
      });
    }
    throw err;
  } finally {
    await vault.close();
  }
}

async function settleVerify(ckpt: Checkpoint, pid: number): Promise<{ ok: boolean; problems: string[] }> {
  let v = verifyTargetHolds(ckpt, pid);
  for (let i = 0; i < 100 && !v.ok; i++) {
    await new Promise((r) => setTimeout(r, 10));
    v = verifyTargetHolds(ckpt, pid);
  }
  return v;
}
