/**
 * `lockmig inspect DIR [--json]`: validate a checkpoint directory and print what it holds —
 * a lock table (kind, type, range, pid, fd, path), counts and skipped fds with reasons.
 * Exit codes: 0 ok, 2 usage, 5 corrupt, truncated, foreign or unsupported image.
 */
import { countLocks, formatRange, ImageError, type Checkpoint } from '../../image/index.js';
import { loadCheckpoint } from '../../image/input.js';
import { CliError, EXIT, parse } from '../args.js';

export const summary = 'validate a checkpoint directory and print its locks, files and skipped fds';

const USAGE = `usage: lockmig inspect PATH [--json]

PATH is a lockmig checkpoint directory, a CRIU image directory (criu dump -D) or a
kubelet/CRI-O/Podman checkpoint archive (.tar, .tar.gz, .tar.zst); the kind is detected.
Validates every image (magic, lengths, checksums, references) and prints the locks.
Exit code 5 when PATH is not a valid checkpoint.`;

/** JSON with bigints as decimal strings. */
export function checkpointToJson(c: Checkpoint): unknown {
  return JSON.parse(JSON.stringify(c, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)));
}

function table(rows: readonly string[][]): string {
  // a loop, not Math.max(...column): spreading 150,000+ rows overflows the call stack
  const w = rows[0]!.map(() => 0);
  for (const r of rows) r.forEach((c, i) => { if (c.length > w[i]!) w[i] = c.length; });
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('  ')).join('\n');
}

export function renderCheckpoint(c: Checkpoint): string {
  const files = new Map(c.files.map((f) => [f.id, f]));
  const rows = [['KIND', 'TYPE', 'RANGE', 'PID', 'FD', 'PATH']];
  for (const l of c.locks) {
    rows.push([l.kind, l.type, formatRange(l), String(l.pid), String(l.fd), JSON.stringify(files.get(l.fileId)?.path ?? '?')]);
  }
  const k = countLocks(c.locks);
  const lines = [
    `checkpoint of pid ${c.source.rootPid} on ${c.source.hostname || '(host not recorded)'} (kernel ${c.source.kernel}), ${c.createdAt}, method ${c.method}`
      + (c.source.pod ? `, pod ${c.source.pod.namespace}/${c.source.pod.name}` : ''),
    ...(c.origin ? [`imported from ${c.origin.kind === 'archive' ? `a${c.origin.engine ? ` ${c.origin.engine}` : ''} checkpoint archive (${c.origin.compression ?? 'none'})` : 'a CRIU image directory'} ${c.origin.path}`
      + (c.origin.container?.name ? `, container ${c.origin.container.name}` : '') + ` (CRIU img_version ${c.origin.criuImgVersion})`] : []),
    `${c.processes.length} processes, ${c.files.length} files, ${c.fds.length} fds, ${c.locks.length} locks `
      + `(POSIX ${k.POSIX}, OFD ${k.OFD}, FLOCK ${k.FLOCK}, LEASE ${k.LEASE}), ${c.skipped.length} skipped fds`,
    '',
    c.locks.length ? table(rows) : '(no locks)',
  ];
  // one pass over the fds (a checkpoint may hold tens of thousands of files and fds)
  const fdsOf = new Map<number, string[]>();
  for (const d of c.fds) {
    const list = fdsOf.get(d.fileId);
    const s = `pid ${d.pid} fd ${d.fd}`;
    if (list) list.push(s); else fdsOf.set(d.fileId, [s]);
  }
  const shared = c.files.filter((f) => (fdsOf.get(f.id)?.length ?? 0) > 1);
  if (shared.length) {
    lines.push('', 'shared descriptions:');
    for (const f of shared) lines.push(`  ${JSON.stringify(f.path)}: ${fdsOf.get(f.id)!.join(', ')}`);
  }
  if (c.skipped.length) {
    lines.push('', 'skipped fds:');
    for (const s of c.skipped) lines.push(`  pid ${s.pid} fd ${s.fd}${s.locked ? ' (locked)' : ''}: ${s.reason}: ${s.message}`);
  }
  if (c.warnings?.length) {
    lines.push('', 'warnings:');
    for (const w of c.warnings) lines.push(`  ${w}`);
  }
  return `${lines.join('\n')}\n`;
}

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, { json: { type: 'boolean' } }, USAGE);
  if (!p) return EXIT.OK;
  if (p.positionals.length !== 1) throw new CliError(`expected exactly one checkpoint (directory or archive)\n${USAGE}`);
  let c: Checkpoint;
  try {
    c = await loadCheckpoint(p.positionals[0]!);
  } catch (err) {
    if (err instanceof ImageError) throw new CliError(`invalid checkpoint (${err.code}): ${err.message}`, EXIT.BAD_IMAGE);
    throw err;
  }
  if (p.values.json) {
    process.stdout.write(`${JSON.stringify({ ...(checkpointToJson(c) as object), counts: countLocks(c.locks) }, null, 2)}\n`);
  } else {
    process.stdout.write(renderCheckpoint(c));
  }
  return EXIT.OK;
}
