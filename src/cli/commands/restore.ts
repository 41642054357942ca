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
import { readCheckpoint, ImageError, type Checkpoint } from '../../image/index.js';
import type { Logger } from '../../log/logger.js'; // type only: the shim never loads winston (see shimLogger)
import { planRestore, plannedFdNumbers, checkFdLimit, RestorePlanError } from '../../engine/restore-plan.js';
import { resolveAll, normalizeAllowPrefix, RestoreRefused } from '../../engine/paths.js';
import {
  restoreLocks, execWithLocks, type RestoreLog, reexecReservingFds, reservedFdsFromEnv, resolveCommand, ENV_RESERVED,
  LockTimeout, FdConflict, RestoreFailed,
} from '../../engine/restore.js';
import { fdIsOpen, fastFs, exitNow, openFileLimit } from '../../engine/restore-sys.js';
import { CliError, EXIT, parse } from '../args.js';

export const summary = 'restore shim: reopen recorded files, re-take their locks, exec a command';

const USAGE = `usage: lockmig restore --image DIR [--root PATH] [--allow PREFIX]… [--timeout S] [--pid PID]… [--dry-run] [--handover SOCKET --checkpoint NAME] -- CMD ARGS…

  --image DIR      checkpoint directory written by \`lockmig dump\`
  --root PATH      directory the recorded paths are resolved in (default /)
  --allow PREFIX   only reopen paths under PREFIX (repeatable; default /); /proc and /sys never
  --timeout S      seconds to wait for locks still held elsewhere (default 30; 0 = try once)
  --pid PID        restore only these source processes (repeatable or comma-separated)
  --dry-run        validate the image and every path, print the plan as JSON, open nothing
  --handover SOCKET --checkpoint NAME
                   take the open file descriptions of NAME from the handover vault at
                   SOCKET (OFD/flock locks move with no window; POSIX waits are queued
                   before the source stops), see docs/handover.md

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
async function receiveFromVault(o: RestoreCli, ckpt: Checkpoint, log: ReturnType<typeof shimLogger>): Promise<{ received?: Map<number, number>; confirm?: () => void | Promise<void> }> {
  const sock = o.values.handover as string | undefined;
  const name = o.values.checkpoint as string | undefined;
  if (sock === undefined && name === undefined) return {};
  if (!sock || !name) throw new CliError(`--handover SOCKET and --checkpoint NAME go together\n${USAGE}`);
  const { receiveForRestore } = await import('../../handover/shim.js');
  return receiveForRestore(ckpt, { socketPath: sock, checkpoint: name, timeoutMs: o.timeoutMs, pids: o.pids, logger: log as unknown as Logger });
}

/**
 * JSON lines on stderr in the same shape as src/log/logger.ts (component, level, message,
 * timestamp, fields). The shim does not load winston: it starts twice (see the fd
 * reservation) as the first process of a container, and winston costs ~0.2 s of CPU per
 * start here, all of it before the locks are held. Honours LOCKMIG_LOG_LEVEL.
 */
export function shimLogger(component = 'restore', level = process.env.LOCKMIG_LOG_LEVEL ?? 'info'): RestoreLog & { error(message: string, meta?: Record<string, unknown>): void } {
  const order = ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'];
  const max = order.indexOf(level) >= 0 ? order.indexOf(level) : 2;
  const emit = (lvl: string) => (message: string, meta: Record<string, unknown> = {}) => {
    if (order.indexOf(lvl) > max) return;
    const line = JSON.stringify({ component, ...meta, level: lvl, message, timestamp: new Date().toISOString() },
      (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
    process.stderr.write(`${line}\n`);
  };
  return { error: emit('error'), warn: emit('warn'), info: emit('info'), debug: emit('debug') };
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

export async function run(argv: string[]): Promise<number> {
  const o = parseCli(argv);
  if (!o) return EXIT.OK;
  const log = shimLogger();
  const stage = process.env[ENV_RESERVED] ? 2 : 1;
  try {
    const ckpt = readCheckpoint(o.image);
    const plan = planRestore(ckpt, { pids: o.pids });
    checkFdLimit(plan, openFileLimit());
    if (!o.dryRun && resolveCommand(o.command[0]!) === null) throw new CliError(`command not found: ${o.command[0]}`, 127);
    // Node.js already uses some low fd numbers; reserve every target number and start again.
    // (No path is validated here: nothing but placeholders is touched before the re-exec,
    // and the second stage validates every path before it opens anything.)
    const targets = plannedFdNumbers(plan);
    const reserved = reservedFdsFromEnv();
    const busy = o.dryRun ? [] : targets.filter((n) => !reserved.has(n) && isOpen(n));
    if (busy.length > 0) {
      if (stage === 2) throw new FdConflict(busy);
      log.debug('reserving fd numbers and re-executing', { fds: busy.length, targets: targets.length });
      reexecReservingFds(targets);
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
    if (o.values.handover !== undefined) resolveAll(o.root, plan.files.map((f) => f.file.path), o.allow, fastFs);
    const vault = await receiveFromVault(o, ckpt, log);
    const result = await restoreLocks(ckpt, {
      root: o.root, allow: o.allow, timeoutMs: o.timeoutMs, pids: o.pids, received: vault.received, reserved, logger: log,
      onProgress: (phase, done, total) => log.info('progress', { phase, done, total }),
    });
    await vault.confirm?.();
    for (const n of result.notRestored) log.warn('lock not restored', { kind: n.lock.kind, path: n.path, reason: n.reason });
    log.info('locks restored', {
      fds: result.fds.length, locks: result.locks.length, notRestored: result.notRestored.length,
      held: result.locks.filter((l) => l.how === 'held').length,
      validateMs: +result.timings.validateMs.toFixed(2), openMs: +result.timings.openMs.toFixed(2),
      lockMs: +result.timings.lockMs.toFixed(2), restoreMs: +result.timings.totalMs.toFixed(2),
      sinceStartMs: Math.round(performance.now()), exec: o.command,
    });
    return execWithLocks(result, o.command, process.env);
  } catch (err) {
    const code = exitFor(err);
    const e = err as Error;
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
