/**
 * `lockmig handover --pid PID [--tree] --image DIR --socket PATH [--target-cgroup PATH]
 *                   [--timeout S] [--hold] [--grace S] [--name NAME] [--allow PREFIX]… [--json] -- CMD ARGS…`
 *
 * Same-node handover, the whole local flow: dump PID, take over its locked open file
 * descriptions into a vault (pidfd_getfd), start CMD through the restore shim (inside
 * --target-cgroup if given), stop PID (SIGTERM, SIGKILL after --grace), and exit once the
 * target holds every lock. The target keeps running; its pid is printed.
 * Exit codes: 0 ok, 1 failure, 2 usage, 77 not root.
 */
import { runLocalHandover, HandoverError, type LocalHandoverResult } from '../../handover/local.js';
import { createLogger } from '../../log/logger.js';
import { formatRange } from '../../image/model.js';
import { CliError, EXIT, parse } from '../args.js';

export const summary = 'move a process\'s locks to a new process on this node (OFD/flock with no window)';

const USAGE = `usage: lockmig handover --pid PID [--tree] --image DIR --socket PATH [--target-cgroup PATH] [--timeout S] [--hold] [--grace S] [--name NAME] [--allow PREFIX]… [--json] -- CMD ARGS…

  --pid PID              the running source process (host pid)
  --tree                 also take over its descendants' locks
  --image DIR            where to write the checkpoint image the shim restores from
  --socket PATH          the vault's unix socket
  --target-cgroup PATH   start the target in this cgroup2 cgroup; only a process inside it may
                         receive (default: only the started target's pid may)
  --timeout S            release the locks if the target has not taken them after S seconds (default 60)
  --hold                 never release: hold until the target takes them (or this command is killed)
  --grace S              seconds between SIGTERM and SIGKILL for the source (default 5)
  --name NAME            checkpoint name in the vault (default local/pid-PID)
  --allow PREFIX         passed to the restore shim (paths it may reopen)
  --json                 print the result as JSON

OFD and flock locks move with their open file descriptions and are never free; POSIX locks
belong to the process and are re-taken by a waiter queued before the source stops: the
report shows each one's measured window. The target keeps running; its pid is printed.`;

function printText(r: LocalHandoverResult): void {
  const out: string[] = [];
  out.push(`handover ${r.checkpoint}: target pid ${r.targetPid} holds every lock (source ${r.sourcePids.join(',')} stopped with ${r.stopSignal})`);
  out.push(`  moved with no window (OFD/flock, the open file description never closed): ${r.moved.length}`);
  for (const l of r.moved) out.push(`    ${l.kind.padEnd(5)} ${l.type.padEnd(5)} ${formatRange(l)}  fd ${l.fd}`);
  out.push(`  re-taken (POSIX, F_SETLKW queued before the stop): ${r.retaken.length}`);
  for (const t of r.retaken) {
    out.push(`    POSIX ${t.lock.type.padEnd(5)} ${formatRange(t.lock)}  fd ${t.lock.fd}  ${t.queued ? 'queued' : 'NOT queued in time'}  `
      + `window ≤ ${(t.grantAfterStopUs / 1000).toFixed(3)} ms after the stop signal (${(t.grantAfterExitUs / 1000).toFixed(3)} ms after the exit was seen)`);
  }
  out.push(`  stop source → target holds all locks: ${r.stopToHoldMs.toFixed(2)} ms`);
  out.push(`  kernel check: ${r.verified.ok ? 'ok (fdinfo + /proc/locks)' : `PROBLEMS: ${r.verified.problems.join('; ')}`}`);
  out.push(`target pid: ${r.targetPid}`);
  process.stdout.write(`${out.join('\n')}\n`);
}

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, {
    pid: { type: 'string' }, tree: { type: 'boolean' }, image: { type: 'string' }, socket: { type: 'string' },
    'target-cgroup': { type: 'string' }, timeout: { type: 'string' }, hold: { type: 'boolean' }, grace: { type: 'string' },
    name: { type: 'string' }, allow: { type: 'string', multiple: true }, json: { type: 'boolean' },
  }, USAGE);
  if (!p) return EXIT.OK;
  const v = p.values;
  if (!v.pid || !/^\d+$/.test(v.pid) || Number(v.pid) < 1) throw new CliError(`--pid PID is required\n${USAGE}`);
  if (!v.image) throw new CliError(`--image DIR is required\n${USAGE}`);
  if (!v.socket) throw new CliError(`--socket PATH is required\n${USAGE}`);
  if (p.rest.length === 0) throw new CliError(`no target command given after --\n${USAGE}`);
  if (p.positionals.length > 0) throw new CliError(`unexpected argument(s) ${p.positionals.join(' ')} (the command goes after --)`);
  const secs = (x: string | undefined, dflt: number, what: string) => {
    if (x === undefined) return dflt;
    const n = Number(x);
    if (!Number.isFinite(n) || n <= 0) throw new CliError(`${what} must be a positive number of seconds, got ${JSON.stringify(x)}`);
    return n;
  };
  const timeout = secs(v.timeout, 60, '--timeout');
  const grace = secs(v.grace, 5, '--grace');
  if (process.getuid?.() !== 0) {
    process.stderr.write('lockmig handover needs root: pidfd_getfd requires ptrace rights over the source (root or CAP_SYS_PTRACE).\n');
    return EXIT.NOT_ROOT;
  }
  const log = createLogger('handover');
  try {
    const r = await runLocalHandover({
      pid: Number(v.pid), tree: v.tree === true, imageDir: v.image, socketPath: v.socket,
      ...(v['target-cgroup'] ? { targetCgroup: v['target-cgroup'] } : {}),
      ...(v.name ? { name: v.name } : {}),
      timeoutMs: Math.round(timeout * 1000), hold: v.hold === true, graceMs: Math.round(grace * 1000),
      command: p.rest, restoreArgs: (v.allow ?? []).flatMap((a) => ['--allow', a]), logger: log,
      onProgress: (s) => log.info('progress', { step: s }),
    });
    if (v.json) {
      process.stdout.write(`${JSON.stringify({
        checkpoint: r.checkpoint, targetPid: r.targetPid, sourcePids: r.sourcePids, stopSignal: r.stopSignal,
        moved: r.moved.map((l) => ({ kind: l.kind, type: l.type, start: l.start.toString(), end: l.end.toString(), fd: l.fd, fileId: l.fileId })),
        retaken: r.retaken.map((t) => ({
          kind: 'POSIX', type: t.lock.type, start: t.lock.start.toString(), end: t.lock.end.toString(), fd: t.lock.fd, fileId: t.lock.fileId,
          queued: t.queued, grantAfterStopUs: Math.round(t.grantAfterStopUs), grantAfterExitUs: Math.round(t.grantAfterExitUs),
        })),
        stopToHoldMs: r.stopToHoldMs, verified: r.verified, timings: r.timings,
      })}\n`);
    } else {
      printText(r);
    }
    return r.verified.ok ? EXIT.OK : EXIT.FAILURE;
  } catch (err) {
    if (err instanceof CliError) throw err;
    log.error((err as Error).message, { error: (err as Error).name });
    process.stderr.write(`lockmig handover: ${(err as Error).message}\n`);
    return err instanceof HandoverError ? EXIT.FAILURE : EXIT.FAILURE;
  }
}
