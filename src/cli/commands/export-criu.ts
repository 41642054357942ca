/**
 * `lockmig export-criu DIR OUT [--json]`: write the checkpoint DIR (a lockmig directory, or
 * anything `inspect` reads) as CRIU images in the new directory OUT, for CRIU's tools
 * (`crit show OUT/filelocks.img`, `crit x OUT ps`). See src/image/criu/export.ts for what is
 * written and docs/criu.md for the mapping.
 * Exit codes: 0 ok, 1 OUT cannot be written (exists and is not empty, …), 2 usage, 5 bad DIR.
 */
import { ImageError } from '../../image/index.js';
import { loadCheckpoint } from '../../image/input.js';
import { CliError, EXIT, parse } from '../args.js';

export const summary = 'write a checkpoint as CRIU images (filelocks, files, fdinfo, pstree, inventory) for crit';

const USAGE = `usage: lockmig export-criu DIR OUT [--json]

Writes the checkpoint DIR as CRIU images into OUT, which must not exist or be empty:
inventory.img, pstree.img, core-<pid>.img, ids-<pid>.img, fdinfo-<pid>.img, files.img,
filelocks.img. \`crit show\`/\`crit decode\` read every one of them; \`criu restore\` cannot use
them (lockmig records no memory). Exit codes: 1 OUT not writable, 2 usage, 5 bad DIR.`;

export async function run(argv: string[]): Promise<number> {
  const p = parse(argv, { json: { type: 'boolean' } }, USAGE);
  if (!p) return EXIT.OK;
  if (p.positionals.length !== 2) throw new CliError(`expected DIR and OUT\n${USAGE}`);
  const [src, out] = p.positionals as [string, string];
  let ckpt;
  try {
    ckpt = await loadCheckpoint(src);
  } catch (err) {
    if (err instanceof ImageError) throw new CliError(`invalid checkpoint (${err.code}): ${err.message}`, EXIT.BAD_IMAGE);
    throw err;
  }
  const { writeCriuDirectory, ExportError } = await import('../../image/criu/index.js');
  let res;
  try {
    res = writeCriuDirectory(out, ckpt);
  } catch (err) {
    if (err instanceof ExportError) throw new CliError(`export-criu: ${err.message}`, EXIT.FAILURE);
    throw err;
  }
  if (p.values.json) process.stdout.write(`${JSON.stringify({ out: res.dir, images: res.images, locks: ckpt.locks.length, files: ckpt.files.length, fds: ckpt.fds.length })}\n`);
  else process.stdout.write(`wrote ${res.images.length} CRIU images (${ckpt.locks.length} locks, ${ckpt.files.length} files, ${ckpt.fds.length} fds) to ${res.dir}\n`);
  return EXIT.OK;
}
