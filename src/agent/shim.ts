/**
 * Installs the restore-shim runtime on the node, once at agent start: the self-contained bundle
 * (src/bundle: its own loader, libraries, node and the compiled restore code) goes under
 * `<shim-dir>/` with `<shim-dir>/current` pointing at it (src/bundle/install.ts does the atomic,
 * verified, content-addressed install). The webhook mounts `<shim-dir>` read-only into restore
 * pods and starts `shimCommand('<mount>/current')`.
 *
 * Source: the prebuilt bundle of the agent image (`--shim-source`, else `$LOCKMIG_SHIM_BUNDLE`,
 * else `<app>/shim`). Without one (a development checkout), a bundle is built on the spot from
 * this installation (dist/ + node_modules + the running node) and installed the same way.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../log/logger.js';
import { SHIM_LAYOUT } from '../bundle/command.js';
import { buildShimBundle } from '../bundle/build.js';
import { defaultBundleSource, installShimBundle } from '../bundle/install.js';

export class ShimInstallError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ShimInstallError';
  }
}

export interface ShimInstall {
  readonly dir: string;
  readonly source: string;
  readonly built: boolean;
  readonly changed: boolean;
}

export function installShim(shimDir: string, opts: { source?: string; logger: Logger }): ShimInstall {
  if (!path.isAbsolute(shimDir)) throw new ShimInstallError(`--shim-dir must be absolute, got "${shimDir}"`);
  const log = opts.logger;
  let source = opts.source ?? defaultBundleSource();
  let built = false;
  let tmp: string | undefined;
  if (!fs.existsSync(path.join(source, SHIM_LAYOUT.manifest))) {
    if (opts.source) throw new ShimInstallError(`${opts.source} is not a shim bundle (no ${SHIM_LAYOUT.manifest})`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-shim-build-'));
    source = path.join(tmp, 'bundle');
    log.info('no prebuilt shim bundle; building one from this installation', { out: source });
    try {
      buildShimBundle({ out: source, log: (l) => log.info('shim bundle', { step: l }) });
    } catch (err) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw new ShimInstallError(`cannot build the shim bundle: ${(err as Error).message}`, { cause: err });
    }
    built = true;
  }
  try {
    const r = installShimBundle(source, shimDir);
    log.info('shim bundle installed', { dir: r.dir, changed: r.changed, removed: r.removed, source: built ? '(built here)' : source });
    return { dir: r.dir, source, built, changed: r.changed };
  } catch (err) {
    throw new ShimInstallError(`cannot install the shim bundle into ${shimDir}: ${(err as Error).message}`, { cause: err });
  } finally {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }
}
