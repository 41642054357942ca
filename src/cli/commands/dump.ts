/**
 * `lockmig dump --pid PID [--pid PID…] [--tree] --out DIR [--method auto|fdinfo|proc-locks] [--kinds K,…] [--json]`
 *
 * Reads the locks of the processes (and with --tree all their descendants) from /proc and
 * writes a checkpoint directory (see src/image/checkpoint.ts). Progress and warnings are
 * JSON log lines on stderr; stdout gets a one-line summary (or JSON with --json).
 * Exit codes: 0 ok, 1 failure, 2 usage.
 */
import { dumpProcesses, DumpError, type DumpMethod } from '../../engine/dump.js';
import { countLocks, type LockKind } from '../../image/index.js';
import { writeDump } from '../../engine/write.js';
import { jsonLogger } from '../../log/lite.js';
import { ProcParseError } from '../../proc/index.js';
import { CliError, EXIT, parse } from '../args.js';

export const summary = 'record the file locks of a process (tree) into a checkpoint directory';

const USAGE = `usage: lockmig dump --pid PID [--pid PID]… [--tree] --out DIR [--method auto|fdinfo|proc-locks] [--kinds POSIX,OFD,FLOCK,LEASE] [--json]

  --pid PID     host pid to dump (repeatable)
  --tree        also dump every descendant of each pid
  --out DIR     checkpoint directory to write (created 0700)
  --method M    auto (default): fdinfo lock: lines when the kernel has them, else /proc/locks;
                LOCKMIG_FORCE_PROC_LOCKS=1 forces proc-locks
  --kinds LIST  record only these lock kinds
  --json        print the summary as JSON`;

const KINDS: readonly LockKind[] = ['POSIX', 'OFD', 'FLOCK', 'LEASE'];

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, {
    pid: { type: 'string', multiple: true }, tree: { type: 'boolean' }, out: { type: 'string' },
    method: { type: 'string' }, kinds: { type: 'string' }, json: { type: 'boolean' },
  }, USAGE);
  if (!p) return EXIT.OK;
  const v = p.values;
  const pidArgs = ((v.pid as string[] | undefined) ?? []).flatMap((s) => s.split(','));
  if (pidArgs.length === 0) throw new CliError(`--pid is required\n${USAGE}`);
  const pids = pidArgs.map((s) => {
    if (!/^\d+$/.test(s) || Number(s) < 1) throw new CliError(`--pid: "${s}" is not a pid`);
    return Number(s);
  });
  const out = v.out as string | undefined;
  if (!out) throw new CliError(`--out is required\n${USAGE}`);
  const method = (v.method as string | undefined) ?? 'auto';
  if (!['auto', 'fdinfo', 'proc-locks'].includes(method)) throw new CliError(`--method must be auto, fdinfo or proc-locks, not "${method}"`);
  let kinds: LockKind[] | undefined;
  if (v.kinds !== undefined) {
    kinds = (v.kinds as string).split(',').map((k) => k.trim().toUpperCase()) as LockKind[];
    for (const k of kinds) if (!KINDS.includes(k)) throw new CliError(`--kinds: "${k}" is not one of ${KINDS.join(', ')}`);
  }
  if (p.positionals.length > 0) throw new CliError(`unexpected argument "${p.positionals[0]}"\n${USAGE}`);

  const log = jsonLogger('dump');
  const t0 = performance.now();
  let ckpt;
  try {
    ckpt = dumpProcesses({
      pids, tree: v.tree === true, method: method as DumpMethod, ...(kinds ? { kinds } : {}), logger: log,
      progressEvery: 2000,
      onProgress: (done, total) => log.info('progress', { fdsScanned: done, fdsTotal: total }),
    });
  } catch (err) {
    if (err instanceof DumpError || err instanceof ProcParseError) throw new CliError(`dump failed: ${err.message}`, EXIT.FAILURE);
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') {
      throw new CliError(`dump failed: ${(err as Error).message} (reading another process's fds needs root or CAP_SYS_PTRACE)`, EXIT.FAILURE);
    }
    throw err;
  }
  const tDump = performance.now();
  writeDump(out, ckpt);
  const tWrite = performance.now();
  const counts = countLocks(ckpt.locks);
  const result = {
    out, method: ckpt.method, processes: ckpt.processes.length, files: ckpt.files.length, fds: ckpt.fds.length,
    locks: ckpt.locks.length, byKind: counts, skipped: ckpt.skipped.length,
    dumpMs: Math.round(tDump - t0), writeMs: Math.round(tWrite - tDump),
  };
  if (v.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    process.stdout.write(`dumped ${result.locks} locks (POSIX ${counts.POSIX}, OFD ${counts.OFD}, FLOCK ${counts.FLOCK}, LEASE ${counts.LEASE}) `
      + `on ${result.files} files, ${result.fds} fds, ${result.processes} processes to ${out} via ${ckpt.method} `
      + `in ${result.dumpMs + result.writeMs} ms${result.skipped ? `; ${result.skipped} fds skipped (see lockmig inspect)` : ''}\n`);
  }
  return EXIT.OK;
}
