/**
 * loadCheckpoint: what `lockmig restore --image X` and `lockmig inspect X` accept.
 *
 *   a lockmig checkpoint directory (manifest.json)      → readCheckpoint, exactly as before
 *   a CRIU image directory (inventory.img, no manifest) → src/image/criu (imported)
 *   a regular file: a tar, tar.gz or tar.zst checkpoint archive (kubelet/CRI-O, Podman,
 *     containerd)                                        → src/image/archive (imported)
 *
 * The kind is told by one stat and one existence check; the CRIU and archive code is only
 * loaded (dynamic import) when the input is not a lockmig directory, so the restore shim
 * starts exactly as fast as before for the images the agent writes. Every failure is an
 * ImageError (exit code 5 in the CLI).
 */
import fs from 'node:fs';
import path from 'node:path';
import { readCheckpoint } from './checkpoint.js';
import { ImageError } from './errors.js';
import { MANIFEST } from './manifest.js';
import type { Checkpoint } from './model.js';
import type { ArchiveImportOptions } from './archive/index.js';

export type InputKind = 'lockmig' | 'criu-dir' | 'archive';

/** Which reader `p` needs (no content is validated here). */
export function detectInput(p: string): InputKind {
  let st: fs.Stats;
  try { st = fs.statSync(p); } catch { return 'lockmig'; } // readCheckpoint reports the missing path
  if (st.isFile()) return 'archive';
  if (st.isDirectory() && !fs.existsSync(path.join(p, MANIFEST)) && fs.existsSync(path.join(p, 'inventory.img'))) return 'criu-dir';
  return 'lockmig';
}

export async function loadCheckpoint(p: string, opts: ArchiveImportOptions = {}): Promise<Checkpoint> {
  switch (detectInput(p)) {
    case 'lockmig':
      try {
        return readCheckpoint(p);
      } catch (err) {
        if (err instanceof ImageError && err.code === 'MISSING' && err.file === path.join(p, MANIFEST) && fs.statSync(p, { throwIfNoEntry: false })?.isDirectory()) {
          throw new ImageError('MISSING', p, 'is neither a lockmig checkpoint (no manifest.json) nor a CRIU image directory (no inventory.img)', undefined, { cause: err });
        }
        throw err;
      }
    case 'criu-dir': return (await import('./criu/index.js')).importCriuDirectory(p, { ...(opts.criuLimits ? { limits: opts.criuLimits } : {}), ...(opts.now ? { now: opts.now } : {}) });
    case 'archive': return (await import('./archive/index.js')).importCheckpointArchive(p, opts);
  }
}
