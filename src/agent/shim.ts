/**
 * Installs the restore-shim runtime on the node, once at agent start: the self-contained bundle
 * (src/bundle: its own loader, libraries, node and the compiled restore code) goes to
 * `<shim-dir>/current/`, which the webhook mounts read-only into restore pods.
 *
 * Source: a prebuilt bundle directory (the agent image ships one; `--shim-source`), copied; or,
 * without one, a bundle built on the spot from this installation (dist/ + node_modules + the
 * running node). Installation is atomic: the new tree is assembled beside `current` and renamed
 * over it (a restore pod starting meanwhile sees the old or the new bundle, never half of one).
 * An identical bundle already in place (same bundle.json) is left alone.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log/logger.js';
import { SHIM_LAYOUT } from '../bundle/command.js';
import { buildShimBundle, verifyShimBundle } from '../bundle/build.js';
import { SHIM_BUNDLE_SUBDIR } from '../webhook/mutate.js';

export class ShimInstallError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ShimInstallError';
  }
}

export interface ShimInstall {
  readonly dir: string;
  readonly action: 'kept' | 'copied' | 'built';
}

export function installShim(shimDir: string, opts: { source?: string; logger: Logger }): ShimInstall {
  if (!path.isAbsolute(shimDir)) throw new ShimInstallError(`--shim-dir must be absolute, got "${shimDir}"`);
  fs.mkdirSync(shimDir, { recursive: true, mode: 0o755 });
  const dest = path.join(shimDir, SHIM_BUNDLE_SUBDIR);
  const manifest = (d: string) => { try { return fs.readFileSync(path.join(d, SHIM_LAYOUT.manifest), 'utf8'); } catch { return undefined; } };
  const log = opts.logger;
  if (opts.source) {
    const want = manifest(opts.source);
    if (want === undefined) throw new ShimInstallError(`${opts.source} is not a shim bundle (no ${SHIM_LAYOUT.manifest})`);
    const problems = verifyShimBundle(opts.source);
    if (problems.length > 0) throw new ShimInstallError(`shim bundle ${opts.source} is damaged: ${problems.slice(0, 5).join('; ')}`);
    if (manifest(dest) === want && verifyShimBundle(dest).length === 0) {
      log.info('shim bundle already installed', { dir: dest });
      return { dir: dest, action: 'kept' };
    }
    const tmp = `${dest}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    try {
      fs.cpSync(opts.source, tmp, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
      swapIn(tmp, dest);
    } catch (err) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw new ShimInstallError(`cannot install the shim bundle into ${dest}: ${(err as Error).message}`, { cause: err });
    }
    log.info('shim bundle installed', { dir: dest, from: opts.source });
    return { dir: dest, action: 'copied' };
  }
  try {
    buildShimBundle({ out: dest, log: (l) => log.info('shim bundle', { step: l }) });
  } catch (err) {
    throw new ShimInstallError(`cannot build the shim bundle into ${dest}: ${(err as Error).message}`, { cause: err });
  }
  return { dir: dest, action: 'built' };
}

/** rename(tmp → dest), replacing an existing dest directory with the smallest gap rename allows. */
function swapIn(tmp: string, dest: string): void {
  const old = `${dest}.old-${process.pid}`;
  let moved = false;
  try {
    fs.renameSync(dest, old);
    moved = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  fs.renameSync(tmp, dest);
  if (moved) fs.rmSync(old, { recursive: true, force: true });
}
