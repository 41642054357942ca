/**
 * Installs a shim bundle on a node (the agent calls this at start with its image's bundle,
 * `$LOCKMIG_SHIM_BUNDLE`, default /app/shim, and its `--shim-dir`):
 *
 *   <shimDir>/<id>/…          one directory per bundle content (id = hash of the manifest's files)
 *   <shimDir>/current -> <id>  relative symlink, replaced atomically (symlink + rename)
 *
 * Restore pods mount <shimDir> read-only and start `shimCommand('<mount>/current')`. A pod that
 * is starting while a new bundle is installed keeps using the directory it resolved: the
 * previous bundle is kept, older ones are removed. An install whose content is already current
 * does nothing. Every copy is verified against the manifest before it becomes current.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BundleError, verifyShimBundle, type BundleManifest } from './build.js';
import { SHIM_CURRENT, SHIM_LAYOUT } from './command.js';

export const CURRENT_LINK = SHIM_CURRENT;

/** The bundle shipped in the image: $LOCKMIG_SHIM_BUNDLE (the agent's --shim-source default; $LOCKMIG_SHIM_SOURCE is accepted too), else <app>/shim next to dist/. */
export function defaultBundleSource(env: Readonly<Record<string, string | undefined>> = process.env): string {
  return env.LOCKMIG_SHIM_BUNDLE ?? env.LOCKMIG_SHIM_SOURCE ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../shim');
}

/** Content id of a bundle: stable across builds with identical files. */
export function bundleId(manifest: Pick<BundleManifest, 'files'>): string {
  const h = createHash('sha256');
  for (const f of [...manifest.files].sort((a, b) => a.path.localeCompare(b.path))) h.update(`${f.path}\0${f.size}\0${f.sha256}\n`);
  return `b-${h.digest('hex').slice(0, 16)}`;
}

export interface InstallResult {
  /** absolute path of the installed bundle (<shimDir>/<id>) */
  readonly dir: string;
  readonly id: string;
  /** false when that content was already current */
  readonly changed: boolean;
  /** old bundle directories removed */
  readonly removed: readonly string[];
}

function readManifest(dir: string): BundleManifest {
  const file = path.join(dir, SHIM_LAYOUT.manifest);
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as BundleManifest;
  } catch (err) {
    throw new BundleError(`shim bundle ${dir}: cannot read ${SHIM_LAYOUT.manifest}: ${(err as Error).message}`);
  }
}

export function installShimBundle(source: string, shimDir: string): InstallResult {
  const problems = verifyShimBundle(source);
  if (problems.length > 0) throw new BundleError(`shim bundle ${source} is damaged: ${problems.slice(0, 5).join('; ')}`);
  const manifest = readManifest(source);
  const id = bundleId(manifest);
  fs.mkdirSync(shimDir, { recursive: true, mode: 0o755 });
  const link = path.join(shimDir, CURRENT_LINK);
  const dest = path.join(shimDir, id);

  let previous: string | null = null;
  try { previous = fs.readlinkSync(link); } catch { /* first install */ }

  let changed = true;
  if (previous === id && verifyShimBundle(dest).length === 0) {
    changed = false;
  } else {
    if (!fs.existsSync(dest) || verifyShimBundle(dest).length > 0) {
      const tmp = path.join(shimDir, `.tmp-${id}-${process.pid}`);
      fs.rmSync(tmp, { recursive: true, force: true });
      fs.cpSync(source, tmp, { recursive: true, dereference: true, preserveTimestamps: true });
      const copied = verifyShimBundle(tmp);
      if (copied.length > 0) {
        fs.rmSync(tmp, { recursive: true, force: true });
        throw new BundleError(`copying the shim bundle to ${tmp} failed verification: ${copied.slice(0, 5).join('; ')}`);
      }
      fs.rmSync(dest, { recursive: true, force: true });
      fs.renameSync(tmp, dest);
    }
    const tmpLink = path.join(shimDir, `.${CURRENT_LINK}-${process.pid}`);
    fs.rmSync(tmpLink, { force: true });
    fs.symlinkSync(id, tmpLink);
    fs.renameSync(tmpLink, link);
  }

  // keep the current bundle and the one before it (a restore pod may be starting from it)
  const removed: string[] = [];
  for (const ent of fs.readdirSync(shimDir, { withFileTypes: true })) {
    if (!ent.isDirectory() || ent.name === id || ent.name === previous) continue;
    if (/^b-[0-9a-f]{16}$/.test(ent.name) || ent.name.startsWith('.tmp-')) {
      fs.rmSync(path.join(shimDir, ent.name), { recursive: true, force: true });
      removed.push(ent.name);
    }
  }
  return { dir: dest, id, changed, removed };
}
