/**
 * Where a checkpoint's images go besides the agent's node-local directory (which every dump
 * writes first: same-node restores and the api fallback read it).
 *
 * api (the default): ConfigMaps owned by the LockCheckpoint — the garbage collector deletes them
 * with it — each at most LIMITS.apiChunkBytes, every image file in exactly one of them under the
 * key `<container>.<file>`. The webhook mounts them as one projected volume whose items lay the
 * files out as `<container>/<file>`, so a restore pod on any node reads the very same directory a
 * node-local restore reads. Integrity: manifest.json carries the sha256 of every other file and
 * the shim's reader checks them.
 *
 * persistentVolumeClaim: the agent has not mounted the claim, but the source pod has (that is
 * where its data lives): the images are written through the source container's own mount of it
 * (/proc/<pid>/root/<mountPath>/<subPath>), every path component opened beneath that root with
 * no symlink followed (the application can write there), files created exclusively under temp
 * names and renamed into place, manifest.json last.
 */
import fs from 'node:fs';
import path from 'node:path';
import { LIMITS, type ImageConfigMap } from '../api/index.js';
import { MANIFEST } from '../image/manifest.js';
import { openBeneath } from '../engine/restore-sys.js';
import { open, closeQuiet, O_PATH, O_DIRECTORY, O_CLOEXEC, O_NOFOLLOW, O_RDONLY } from '../sys/index.js';

export interface ImageFile {
  readonly container: string;
  readonly file: string;
  readonly bytes: Buffer;
}

/** Every file of every container image directory under `dir` (`dir/<container>/<file>`). */
export function readImageFiles(dir: string, containers: readonly string[]): ImageFile[] {
  const out: ImageFile[] = [];
  for (const c of containers) {
    for (const f of fs.readdirSync(path.join(dir, c)).sort()) {
      if (f.startsWith('.')) continue;
      out.push({ container: c, file: f, bytes: fs.readFileSync(path.join(dir, c, f)) });
    }
  }
  return out;
}

export interface ConfigMapPlan extends ImageConfigMap {
  /** key → base64 */
  readonly binaryData: Readonly<Record<string, string>>;
  readonly bytes: number;
}

export class ImagesTooLarge extends Error {
  constructor(readonly bytes: number) {
    super(`the images are ${bytes} bytes, more than the ${LIMITS.apiImageBytes} bytes api storage keeps in ConfigMaps`);
    this.name = 'ImagesTooLarge';
  }
}

/** `<checkpoint>-lockmig-<n>`, a valid object name whatever the checkpoint's length. */
export function configMapName(checkpoint: string, n: number): string {
  const tail = `-lockmig-${n}`;
  const head = checkpoint.slice(0, 253 - tail.length).replace(/[-.]+$/, '');
  return `${head}${tail}`;
}

/** Pack the files into as few ConfigMaps as fit under the size limit (first fit, in order). */
export function planConfigMaps(checkpoint: string, files: readonly ImageFile[]): ConfigMapPlan[] {
  const total = files.reduce((n, f) => n + f.bytes.length, 0);
  if (total > LIMITS.apiImageBytes) throw new ImagesTooLarge(total);
  const plans: { items: { key: string; path: string }[]; binaryData: Record<string, string>; bytes: number }[] = [];
  for (const f of files) {
    // base64 grows the data by 4/3: that is what counts against the object size limit
    const size = Math.ceil(f.bytes.length / 3) * 4 + f.container.length + f.file.length + 64;
    if (size > LIMITS.apiChunkBytes) throw new ImagesTooLarge(total);
    let p = plans.find((x) => x.bytes + size <= LIMITS.apiChunkBytes);
    if (!p) { p = { items: [], binaryData: {}, bytes: 0 }; plans.push(p); }
    const key = `${f.container}.${f.file}`;
    p.items.push({ key, path: `${f.container}/${f.file}` });
    p.binaryData[key] = f.bytes.toString('base64');
    p.bytes += size;
  }
  return plans.map((p, i) => ({ name: configMapName(checkpoint, i), ...p }));
}

export class ClaimWriteError extends Error {
  constructor(readonly reason: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ClaimWriteError';
  }
}

/** Open (creating as needed) `rel` beneath the directory fd `root`: no component may be a symlink. */
function mkdirBeneath(root: number, rel: string): number {
  let dir = root;
  const opened: number[] = [];
  try {
    for (const part of rel.split('/').filter(Boolean)) {
      if (part === '.' || part === '..') throw new ClaimWriteError('InvalidStorage', `path component "${part}" is not allowed`);
      try {
        fs.mkdirSync(`/proc/self/fd/${dir}/${part}`, { mode: 0o755 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const next = openBeneath(dir, part, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
      opened.push(next);
      dir = next;
    }
    const result = opened.pop() ?? open(`/proc/self/fd/${root}`, O_PATH | O_DIRECTORY | O_CLOEXEC);
    return result;
  } finally {
    for (const fd of opened) closeQuiet(fd);
  }
}

function writeExclusive(dirfd: number, name: string, data: Buffer): void {
  const tmp = `.${name}.tmp-${process.pid}-${Date.now()}`;
  const fd = fs.openSync(`/proc/self/fd/${dirfd}/${tmp}`, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o644);
  try {
    let off = 0;
    while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(`/proc/self/fd/${dirfd}/${tmp}`, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  fs.renameSync(`/proc/self/fd/${dirfd}/${tmp}`, `/proc/self/fd/${dirfd}/${name}`);
}

/**
 * Write the image files into `<mountPath>/<subPath>` as the process `pid` sees it (its mount of
 * the claim): `<subPath>/<container>/<file>`, each container's manifest.json last.
 */
export function writeThroughMount(pid: number, mountPath: string, subPath: string, files: readonly ImageFile[], procRoot = '/proc'): void {
  let root = -1;
  const dirs = new Map<string, number>();
  try {
    root = open(`${procRoot}/${pid}/root`, O_PATH | O_DIRECTORY | O_CLOEXEC);
    const base = mkdirBeneath(root, `${mountPath.replace(/^\/+/, '')}/${subPath}`);
    dirs.set('', base);
    const ordered = [...files].sort((a, b) => Number(a.file === MANIFEST) - Number(b.file === MANIFEST));
    for (const f of ordered) {
      let d = dirs.get(f.container);
      if (d === undefined) { d = mkdirBeneath(base, f.container); dirs.set(f.container, d); }
      writeExclusive(d, f.file, f.bytes);
    }
    for (const d of dirs.values()) {
      const fd = fs.openSync(`/proc/self/fd/${d}`, O_RDONLY | O_DIRECTORY);
      try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
    }
  } catch (err) {
    if (err instanceof ClaimWriteError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? '';
    throw new ClaimWriteError(code === 'ELOOP' || code === 'EXDEV' ? 'InvalidStorage' : 'ClaimWriteFailed',
      `cannot write the images into the claim through pid ${pid}'s mount ${mountPath}${subPath ? `/${subPath}` : ''}: ${(err as Error).message}`, { cause: err });
  } finally {
    for (const d of dirs.values()) closeQuiet(d);
    if (root >= 0) closeQuiet(root);
  }
}
