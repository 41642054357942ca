/**
 * `lockmig import INPUT --out DIR [--json]`: convert a CRIU image directory or a container
 * checkpoint archive (kubelet/CRI-O .tar, Podman .tar.zst/.tar.gz, containerd) into a lockmig
 * checkpoint directory (src/engine/import.ts, the call the agent makes). Progress and warnings
 * are JSON log lines on stderr; stdout gets a summary.
 * Exit codes: 0 ok, 1 DIR cannot be written, 2 usage, 5 the input is not a valid checkpoint.
 */
import { importCheckpoint } from '../../engine/import.js';
import { ImageError } from '../../image/index.js';
import { createLogger } from '../../log/logger.js';
import { CliError, EXIT, parse } from '../args.js';

export const summary = 'convert CRIU images or a kubelet/CRI-O/Podman checkpoint archive into a lockmig checkpoint directory';

const USAGE = `usage: lockmig import INPUT --out DIR [--json]

  INPUT        a CRIU image directory (criu dump -D) or a checkpoint archive (.tar, .tar.gz,
               .tar.zst) written by the kubelet checkpoint API (CRI-O), Podman or containerd
  --out DIR    lockmig checkpoint directory to write (created 0700)
  --json       print the summary as JSON

LOCKMIG_ARCHIVE_MAX_BYTES and LOCKMIG_ARCHIVE_MAX_RATIO bound decompression (see docs/criu.md).`;

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, { out: { type: 'string' }, json: { type: 'boolean' } }, USAGE);
  if (!p) return EXIT.OK;
  if (p.positionals.length !== 1) throw new CliError(`expected exactly one INPUT\n${USAGE}`);
  const out = p.values.out as string | undefined;
  if (!out) throw new CliError(`--out is required\n${USAGE}`);
  const log = createLogger('import');
  let r;
  try {
    r = await importCheckpoint(p.positionals[0]!, out, { logger: log });
  } catch (err) {
    if (err instanceof ImageError) throw new CliError(`invalid checkpoint (${err.code}): ${err.message}`, EXIT.BAD_IMAGE);
    const code = (err as NodeJS.ErrnoException).code;
    if (code) throw new CliError(`import: cannot write ${out}: ${(err as Error).message}`, EXIT.FAILURE);
    throw err;
  }
  const c = r.counts;
  if (p.values.json) {
    process.stdout.write(`${JSON.stringify({ input: r.input, kind: r.kind, out: r.outDir, files: c.files, fds: c.fds, locks: c.locks, byKind: c.byKind, skipped: c.skipped, origin: r.checkpoint.origin, readMs: Math.round(r.readMs), writeMs: Math.round(r.writeMs) })}\n`);
  } else {
    process.stdout.write(`imported ${c.locks} locks (POSIX ${c.byKind.POSIX}, OFD ${c.byKind.OFD}, FLOCK ${c.byKind.FLOCK}, LEASE ${c.byKind.LEASE}) on ${c.files} files, `
      + `${c.fds} fds from ${r.kind === 'archive' ? 'the archive' : 'the CRIU images'} ${r.input} into ${r.outDir}`
      + `${c.skipped ? `; ${c.skipped} locked fds could not be mapped (see lockmig inspect)` : ''}\n`);
  }
  return EXIT.OK;
}
