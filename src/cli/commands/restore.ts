/**
 * `lockmig restore --image DIR [--root PATH] [--allow PREFIX…] [--timeout S] [--pid PID…] [--dry-run] -- CMD ARGS…`
 *
 * The restore shim: runs as the container's first process, reopens the recorded files at
 * their fd numbers, re-takes the locks and execve()s CMD (see src/engine/restore.ts).
 * Logs are JSON lines on stderr; stdout belongs to CMD (and to --dry-run's plan).
 *
 * Exit codes (only when CMD was not exec'd): 2 usage, 3 a lock stayed held elsewhere past
 * --timeout, 4 a recorded path was refused (nothing was opened), 5 corrupt image, 1 other.
 */
import { ImageError, type Checkpoint } from '../../image/index.js';
import { loadCheckpoint } from '../../image/input.js';
import { jsonLogger, type Log } from '../../log/lite.js';
import { planRestore, plannedFdNumbers, checkFdLimit, RestorePlanError } from '../../engine/restore-plan.js';
import { resolveAll, normalizeAllowPrefix, RestoreRefused } from '../../engine/paths.js';
import {
  restoreLocks, execWithLocks, type RestoreLog, reexecReservingFds, reservePlaceholders, reservedFdsFromEnv, resolveCommand, ENV_RESERVED,
  LockTimeout, FdConflict, RestoreFailed,
} from '../../engine/restore.js';
import { fdIsOpen, fastFs, exitNow, openFileLimit } from '../../engine/restore-sys.js';
import { execRestored } from '../../engine/restore-exec.js';
import { chooseFdPlacement } from '../../engine/restore-fds.js';
import { nativeLib, nativeLibProblem, unshareFiles } from '../../sys/native.js';
import { readlinkSync } from 'node:fs';
import { CliError, EXIT, parse } from '../args.js';
import {
  bootID, readRestoreState, selfStartTicks, writeRestoreState, writeTerminationMessage, STATE_FILE_VERSION, type RestoreStateFile,
} from '../../engine/restore-state.js';

export const summary = 'restore shim: reopen recorded files, re-take their locks, exec a command';

const USAGE = `usage: lockmig restore --image PATH [--root PATH] [--allow PREFIX]… [--timeout S] [--pid PID]… [--dry-run] [--handover SOCKET --checkpoint NAME] [--state-file PATH] -- CMD ARGS…

  --image PATH     checkpoint directory written by \`lockmig dump\`, or a CRIU image
                   directory, or a kubelet/CRI-O/Podman checkpoint archive (.tar[.gz|.zst])
  --root PATH      directory the recorded paths are resolved in (default /)
  --allow PREFIX   only reopen paths under PREFIX (repeatable; default /); /proc and /sys never
  --timeout S      seconds to wait for locks still held elsewhere (default 30; 0 = try once)
  --pid PID        restore only these source processes (repeatable or comma-separated)
  --dry-run        validate the image and every path, print the plan as JSON, open nothing
  --handover SOCKET --checkpoint NAME
                   take the open file descriptions of NAME from the handover vault at
                   SOCKET (OFD/flock locks move with no window; POSIX waits are queued
                   before the source stops), see docs/handover.md
  --state-file PATH
                   record the outcome in PATH (atomically) before exec; when PATH already
                   says the locks were restored (a restarted container), start CMD at once
                   without restoring again (the restored locks left with the old process)

The command inherits the restored fds; LOCKMIG_FDS lists them (see docs/restore.md).
Exit codes: 2 usage, 3 lock timeout, 4 refused path, 5 bad image, 1 other failure.`;

/**
 * Every option of the command, in one place (`handover` and `checkpoint` drive
 * `receiveFromVault` below).
 */
export const RESTORE_OPTIONS = {
  image: { type: 'string' },
  root: { type: 'string' },
  allow: { type: 'string', multiple: true },
  timeout: { type: 'string' },
  pid: { type: 'string', multiple: true },
  'dry-run': { type: 'boolean' },
  handover: { type: 'string' },
  checkpoint: { type: 'string' },
  'state-file': { type: 'string' },
} as const;

interface RestoreCli {
  readonly image: string;
  readonly root: string;
  readonly allow: readonly string[];
  readonly timeoutMs: number;
  readonly pids?: readonly number[];
  readonly dryRun: boolean;
  readonly command: readonly string[];
  /** the parsed option values, for additions (handover) that read their own options */
  readonly values: Readonly<Record<string, unknown>>;
}

function parseCli(argv: string[]): RestoreCli | null {
  const p = parse(argv, RESTORE_OPTIONS, USAGE);
  if (!p) return null;
  const v = p.values;
  if (!v.image) throw new CliError(`--image is required\n${USAGE}`);
  const allowRaw = [...(v.allow ?? [])];
  if (p.positionals.length > 0) {
    // `--allow /a /b`: extra words after --allow are more prefixes; anything else is a mistake
    if (allowRaw.length === 0 || p.positionals.some((x) => !x.startsWith('/'))) {
      throw new CliError(`unexpected argument(s) ${p.positionals.join(' ')} (the command goes after --)\n${USAGE}`);
    }
    allowRaw.push(...p.positionals);
  }
  let allow: string[];
  try { allow = (allowRaw.length > 0 ? allowRaw : ['/']).map(normalizeAllowPrefix); } catch (err) { throw new CliError((err as Error).message); }
  const timeout = v.timeout === undefined ? 30 : Number(v.timeout);
  if (!Number.isFinite(timeout) || timeout < 0) throw new CliError(`--timeout must be a number of seconds ≥ 0, got ${JSON.stringify(v.timeout)}`);
  let pids: number[] | undefined;
  if (v.pid) {
    pids = v.pid.flatMap((s) => s.split(',')).filter((s) => s !== '').map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n <= 0) throw new CliError(`--pid must be a process id, got ${JSON.stringify(s)}`);
      return n;
    });
  }
  const dryRun = v['dry-run'] === true;
  if (!dryRun && p.rest.length === 0) throw new CliError(`no command given after --\n${USAGE}`);
  return {
    image: v.image, root: v.root ?? '/', allow, timeoutMs: Math.round(timeout * 1000), pids, dryRun,
    command: p.rest, values: v,
  };
}

/**
 * Hand-over hook: with `--handover SOCKET --checkpoint NAME`, receive the
 * open file descriptions from the vault (FileRecord.id → fd) and return a `confirm` to call
 * once the locks are held. Runs after the fd reservation re-exec, before restoreLocks.
 * Without those options nothing is received and every file is reopened by path.
 */
async function receiveFromVault(o: RestoreCli, ckpt: Checkpoint, log: ReturnType<typeof shimLogger>): Promise<{
  received?: Map<number, number>; confirm?: () => void | Promise<void>; onPlaced?: (where: ReadonlyMap<number, number>) => void;
}> {
  const sock = o.values.handover as string | undefined;
  const name = o.values.checkpoint as string | undefined;
  if (sock === undefined && name === undefined) return {};
  if (!sock || !name) throw new CliError(`--handover SOCKET and --checkpoint NAME go together\n${USAGE}`);
  const { receiveForRestore } = await import('../../handover/shim.js');
  try {
    return await receiveForRestore(ckpt, { socketPath: sock, checkpoint: name, timeoutMs: o.timeoutMs, pids: o.pids, logger: log });
  } catch (err) {
    // The vault no longer has the descriptions for anyone: it lost them (agent restart, hold
    // time over), or an earlier start of this very container received them and its process is
    // gone. The images still say what to take: re-take every lock instead of failing forever.
    const { HandoverRefused, HandoverFailed } = await import('../../handover/client.js');
    const gone = (err instanceof HandoverRefused && (err.code === 'unknown-checkpoint' || err.code === 'already-delivered'))
      || (err instanceof HandoverFailed && ['ENOENT', 'ECONNREFUSED'].includes((err.cause as { code?: string } | undefined)?.code ?? ''));
    if (!gone) throw err;
    log.warn('the vault cannot hand the descriptions over; re-taking every lock from the images instead', { event: 'handover-unavailable', checkpoint: name, error: (err as Error).message });
    return {};
  }
}

/**
 * JSON lines on stderr in the same shape as src/log/logger.ts (src/log/lite.ts). The shim does
 * not load winston: it runs as the first process of a container, and winston costs 70–90 ms of
 * start-up here, all of it before the locks are held. Honours LOCKMIG_LOG_LEVEL.
 */
export function shimLogger(component = 'restore', level = process.env.LOCKMIG_LOG_LEVEL ?? 'info'): Log {
  return jsonLogger(component, level);
}

function exitFor(err: unknown): number {
  if (err instanceof RestoreRefused) return EXIT.REFUSED;
  if (err instanceof LockTimeout) return EXIT.LOCK_TIMEOUT;
  if (err instanceof ImageError) return EXIT.BAD_IMAGE;
  if (err instanceof RestorePlanError) return EXIT.USAGE;
  if (err instanceof CliError) return err.exitCode;
  return EXIT.FAILURE;
}

const isOpen = fdIsOpen;

/** A restarted container whose locks were restored before: start the command, restore nothing. */
function startAfterRestart(o: RestoreCli, stateFile: string, prior: RestoreStateFile, log: ReturnType<typeof shimLogger>): never {
  log.warn('the locks were restored for an earlier start of this container; they were released when that process exited: starting the command without restoring', {
    event: 'restart-after-restore', stateFile, restoredAt: prior.time, exec: o.command,
  });
  return execWithLocks({ fds: [], locks: [], notRestored: [], env: {}, envValue: '', inherited: [], deferred: null, timings: { validateMs: 0, openMs: 0, lockMs: 0, totalMs: 0 } }, o.command, process.env);
}

/** `at`: when every lock was held (wall clock ms and CLOCK_MONOTONIC ns), default now. */
function recordState(file: string | undefined, state: Omit<RestoreStateFile, 'v' | 'time' | 'monotonicNs' | 'bootID' | 'pid' | 'startTicks'>, log: ReturnType<typeof shimLogger>, at = { wallMs: Date.now(), ns: process.hrtime.bigint() }): void {
  if (!file) return;
  try {
    const b = bootID();
    const ticks = selfStartTicks();
    writeRestoreState(file, {
      v: STATE_FILE_VERSION, time: new Date(at.wallMs).toISOString(), monotonicNs: at.ns.toString(), pid: process.pid,
      ...(b ? { bootID: b } : {}), ...(ticks ? { startTicks: ticks } : {}), ...state,
    });
  } catch (err) {
    log.warn('could not write the state file', { stateFile: file, error: (err as Error).message });
  }
}

/** The first fds of `fds` with what they are (anon_inode:[eventpoll], pipe:[…]), for the log. */
function describeFds(fds: readonly number[]): { fd: number; is: string }[] {
  return fds.slice(0, 20).map((fd) => {
    let is = '?';
    try { is = readlinkSync(`/proc/self/fd/${fd}`); } catch { /* no /proc */ }
    return { fd, is };
  });
}

export async function run(argv: string[]): Promise<number> {
  const o = parseCli(argv);
  if (!o) return EXIT.OK;
  const log = shimLogger();
  const stage = process.env[ENV_RESERVED] ? 2 : 1;
  const stateFile = o.values['state-file'] as string | undefined;
  const tRun = performance.now();
  try {
    if (stateFile && !o.dryRun) {
      let prior: RestoreStateFile | undefined;
      try { prior = readRestoreState(stateFile); } catch (err) { log.warn('ignoring an unreadable state file; restoring', { stateFile, error: (err as Error).message }); }
      if (prior?.state === 'held') startAfterRestart(o, stateFile, prior, log);
    }
    const ckpt = await loadCheckpoint(o.image); // a lockmig directory; or CRIU images / a checkpoint archive (docs/criu.md)
    const plan = planRestore(ckpt, { pids: o.pids });
    checkFdLimit(plan, openFileLimit());
    const tImage = performance.now();
    if (!o.dryRun && resolveCommand(o.command[0]!) === null) throw new CliError(`command not found: ${o.command[0]}`, 127);
    // Node.js already uses some low fd numbers (restore-fds.ts): place those descriptions at
    // exec time in a private fd table, or (fallback) reserve every target number and start again.
    // (No path is validated before a re-exec: nothing but placeholders is touched before it,
    // and the second stage validates every path before it opens anything.)
    const targets = plannedFdNumbers(plan);
    const reserved = reservedFdsFromEnv();
    const busy = o.dryRun ? [] : targets.filter((n) => !reserved.has(n) && isOpen(n));
    let deferred: Set<number> | undefined;
    if (busy.length > 0) {
      if (stage === 2) throw new FdConflict(busy);
      let choice = chooseFdPlacement(busy, { native: nativeLib() !== null, nativeProblem: nativeLibProblem() });
      if (choice.kind === 'private-table') {
        try {
          unshareFiles();
          deferred = new Set(choice.deferred);
          log.debug('recorded fd numbers are the runtime\'s own: placing them at exec time on a private fd table (one start)', { fds: describeFds(busy) });
        } catch (err) {
          choice = { kind: 'reexec', reason: (err as Error).message };
        }
      }
      if (choice.kind === 'reexec') {
        log.info('recorded fd numbers are the runtime\'s own: re-executing once with placeholders (a second Node.js start)', {
          reason: choice.reason, fds: describeFds(busy), count: busy.length, targets: targets.length,
        });
        reexecReservingFds(targets);
      }
    }
    if (o.dryRun) {
      const resolved = resolveAll(o.root, plan.files.map((f) => f.file.path), o.allow, fastFs);
      const out = {
        image: o.image, root: o.root, allow: o.allow, primaryPid: plan.primaryPid, pids: plan.pids,
        fds: plan.files.flatMap((f) => f.fds.map((fd, i) => ({
          fd, path: f.file.path, resolved: resolved.get(f.file.path)?.resolved, from: f.from[i], flags: `0${f.file.flags.toString(8)}`, pos: f.file.pos.toString(),
        }))),
        locks: plan.locks.map((l) => ({ kind: l.lock.kind, type: l.lock.type, start: l.lock.start.toString(), end: l.lock.end.toString(), fd: l.fd, path: l.file.path, fromPid: l.lock.pid })),
        notRestored: plan.notRestored.map((n) => ({ kind: n.lock.kind, path: n.path, reason: n.reason })),
      };
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      return EXIT.OK;
    }

    // restoreLocks validates every path before it opens anything; with a handover, refuse
    // before taking descriptions from the vault too
    if (o.values.handover !== undefined) {
      resolveAll(o.root, plan.files.map((f) => f.file.path), o.allow, fastFs);
      // the vault's socket and the received descriptions must not land on a number the restore needs
      const free = targets.filter((n) => !reserved.has(n) && !(deferred?.has(n) ?? false) && !isOpen(n));
      for (const n of reservePlaceholders(free)) reserved.add(n);
    }
    const vault = await receiveFromVault(o, ckpt, log);
    const result = await restoreLocks(ckpt, {
      root: o.root, allow: o.allow, timeoutMs: o.timeoutMs, pids: o.pids, received: vault.received, reserved, logger: log,
      ...(deferred ? { deferred } : {}), ...(vault.onPlaced ? { onPlaced: vault.onPlaced } : {}),
      onProgress: (phase, done, total) => log.info('progress', { phase, done, total }),
    });
    const heldAt = { wallMs: Date.now(), ns: process.hrtime.bigint() }; // every lock is held from here on
    await vault.confirm?.();
    for (const n of result.notRestored) log.warn('lock not restored', { kind: n.lock.kind, path: n.path, reason: n.reason });
    // fds the dump (or the CRIU import) could not map to a path, and what it noticed: one line each
    for (const k of ckpt.skipped.filter((x) => x.locked)) log.warn('lock not restorable', { pid: k.pid, fd: k.fd, target: k.target, reason: k.reason, detail: k.message });
    for (const w of ckpt.warnings ?? []) log.warn('checkpoint warning', { warning: w });
    log.info('locks restored', {
      fds: result.fds.length, locks: result.locks.length, notRestored: result.notRestored.length,
      held: result.locks.filter((l) => l.how === 'held').length,
      validateMs: +result.timings.validateMs.toFixed(2), openMs: +result.timings.openMs.toFixed(2),
      lockMs: +result.timings.lockMs.toFixed(2), restoreMs: +result.timings.totalMs.toFixed(2),
      startupMs: Math.round(tRun), imageMs: +(tImage - tRun).toFixed(2), sinceStartMs: Math.round(performance.now()), exec: o.command,
    });
    const counts = { posix: 0, flock: 0, ofd: 0, lease: 0, total: result.locks.length };
    for (const l of result.locks) counts[l.kind === 'POSIX' ? 'posix' : l.kind === 'FLOCK' ? 'flock' : l.kind === 'OFD' ? 'ofd' : 'lease']++;
    recordState(stateFile, {
      state: 'held', image: o.image, ...(o.values.checkpoint ? { checkpoint: o.values.checkpoint as string } : {}),
      mode: o.values.handover !== undefined ? 'handover' : 'retake', locks: counts,
      handedOver: result.locks.filter((l) => l.how === 'held').length, notRestored: result.notRestored.length,
      fds: [...new Set(result.locks.map((l) => l.fd))].sort((a, b) => a - b),
    }, log, heldAt);
    return await execRestored(result, o.command, process.env, { timeoutMs: o.timeoutMs, logger: log });
  } catch (err) {
    const code = exitFor(err);
    const e = err as Error;
    writeTerminationMessage(`lockmig restore failed (exit ${code}, ${e.name}): ${e.message}`);
    recordState(stateFile, {
      state: 'failed', image: o.image, ...(o.values.checkpoint ? { checkpoint: o.values.checkpoint as string } : {}),
      mode: o.values.handover !== undefined ? 'handover' : 'retake', locks: { posix: 0, flock: 0, ofd: 0, lease: 0, total: 0 },
      handedOver: 0, notRestored: 0, fds: [], error: { name: e.name, message: e.message.slice(0, 4000), exitCode: code },
    }, log);
    log.error(e.message, {
      error: e.name, exitCode: code,
      ...(err instanceof RestoreRefused ? { path: err.path, rule: err.rule } : {}),
      ...(err instanceof LockTimeout ? { path: err.path, holders: err.holders.map((h) => ({ pid: h.pid, comm: h.comm, kind: h.kind, type: h.type })) } : {}),
      ...(err instanceof RestoreFailed ? { path: err.path } : {}),
    });
    // a handover may have left threads blocked in F_SETLKW: Node would wait for them on exit
    if (o.values.handover !== undefined) exitNow(code);
    return code;
  }
}
