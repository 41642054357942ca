/**
 * manifest.json: lockmig's own description of a checkpoint directory, written last.
 *
 * It holds what CRIU's messages cannot: format version, source identity, method, the
 * process list, per-file extras (device, inode, mount point and path below it — a
 * reg_file_entry only has the absolute name and mnt_id), the skipped fds with reasons,
 * and a sha256 of every image file. 64-bit numbers are decimal strings.
 */
import type { CheckpointOrigin, ProcessRecord, SkippedFd, SourceIdentity } from './model.js';
import { ImageError } from './errors.js';

export const FORMAT_NAME = 'lockmig-checkpoint';
export const FORMAT_VERSION = 1;
export const MANIFEST = 'manifest.json';
export const FILELOCKS_IMG = 'filelocks.img';
export const FILES_IMG = 'files.img';
export const fdinfoImageName = (pid: number): string => `fdinfo-${pid}.img`;

export interface ManifestProcess extends ProcessRecord {
  /** image file holding this process's fdinfo_entry records */
  readonly fdinfoImage: string;
}

export interface ManifestFile {
  readonly id: number;
  readonly dev: { readonly major: number; readonly minor: number };
  readonly ino: string;
  readonly mountPoint: string;
  readonly relPath: string;
}

export interface ManifestImage {
  readonly sha256: string;
  readonly size: number;
  readonly entries: number;
}

export interface Manifest {
  readonly format: typeof FORMAT_NAME;
  readonly formatVersion: number;
  readonly writer: string;
  readonly createdAt: string;
  readonly method: 'fdinfo' | 'proc-locks' | 'criu';
  readonly origin?: CheckpointOrigin;
  readonly source: SourceIdentity;
  readonly processes: readonly ManifestProcess[];
  readonly files: readonly ManifestFile[];
  readonly skipped: readonly SkippedFd[];
  readonly warnings?: readonly string[];
  readonly counts: { readonly files: number; readonly fds: number; readonly locks: number };
  readonly images: Readonly<Record<string, ManifestImage>>;
}

const IMAGE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*\.img$/;
const SKIP_REASONS = new Set(['deleted', 'socket', 'pipe', 'anon_inode', 'memfd', 'unreachable', 'other']);

/** Validate parsed JSON into a Manifest; every complaint names the field path. */
export function validateManifest(raw: unknown, file: string): Manifest {
  const bad = (where: string, what: string): never => { throw new ImageError('INVALID', file, `${where} ${what}`); };
  const obj = (v: unknown, where: string): Record<string, unknown> =>
    (v !== null && typeof v === 'object' && !Array.isArray(v) ? v as Record<string, unknown> : bad(where, 'must be an object'));
  const arr = (v: unknown, where: string): unknown[] => (Array.isArray(v) ? v : bad(where, 'must be an array'));
  const str = (v: unknown, where: string): string => (typeof v === 'string' ? v : bad(where, 'must be a string'));
  const int = (v: unknown, where: string, min = 0): number =>
    (typeof v === 'number' && Number.isSafeInteger(v) && v >= min ? v : bad(where, `must be an integer ≥ ${min}`));
  const dec = (v: unknown, where: string): string => (typeof v === 'string' && /^\d+$/.test(v) ? v : bad(where, 'must be a decimal string'));

  const m = obj(raw, 'manifest');
  if (m.format !== FORMAT_NAME) bad('format', `is ${JSON.stringify(m.format)}, not "${FORMAT_NAME}": not a lockmig checkpoint`);
  if (m.formatVersion !== FORMAT_VERSION) {
    throw new ImageError('VERSION', file, `format version ${JSON.stringify(m.formatVersion)} is not supported (this lockmig reads version ${FORMAT_VERSION})`);
  }
  const method = m.method === 'fdinfo' || m.method === 'proc-locks' || m.method === 'criu' ? m.method : bad('method', 'must be "fdinfo", "proc-locks" or "criu"');
  let origin: CheckpointOrigin | undefined;
  if (m.origin !== undefined) {
    const o = obj(m.origin, 'origin');
    const kind = o.kind === 'criu-dir' || o.kind === 'archive' ? o.kind : bad('origin.kind', 'must be "criu-dir" or "archive"');
    const comp = o.compression;
    if (comp !== undefined && comp !== 'none' && comp !== 'gzip' && comp !== 'zstd') bad('origin.compression', 'must be "none", "gzip" or "zstd"');
    let container: CheckpointOrigin['container'];
    if (o.container !== undefined) {
      const c = obj(o.container, 'origin.container');
      container = {
        ...(c.id !== undefined ? { id: str(c.id, 'origin.container.id') } : {}),
        ...(c.name !== undefined ? { name: str(c.name, 'origin.container.name') } : {}),
      };
    }
    origin = {
      kind, path: str(o.path, 'origin.path'), criuImgVersion: int(o.criuImgVersion, 'origin.criuImgVersion'),
      ...(comp !== undefined ? { compression: comp as 'none' | 'gzip' | 'zstd' } : {}),
      ...(o.engine !== undefined ? { engine: str(o.engine, 'origin.engine') } : {}),
      ...(container ? { container } : {}),
    };
  }
  if ((method === 'criu') !== (origin !== undefined)) bad('origin', 'must be present exactly when method is "criu"');
  const s = obj(m.source, 'source');
  let pod: SourceIdentity['pod'];
  if (s.pod !== undefined) {
    const p = obj(s.pod, 'source.pod');
    pod = {
      namespace: str(p.namespace, 'source.pod.namespace'), name: str(p.name, 'source.pod.name'), uid: str(p.uid, 'source.pod.uid'),
      ...(p.containers !== undefined ? { containers: arr(p.containers, 'source.pod.containers').map((c, i) => str(c, `source.pod.containers[${i}]`)) } : {}),
    };
  }
  const source: SourceIdentity = {
    hostname: str(s.hostname, 'source.hostname'), kernel: str(s.kernel, 'source.kernel'), rootPid: int(s.rootPid, 'source.rootPid'),
    ...(pod ? { pod } : {}),
  };
  const processes = arr(m.processes, 'processes').map((v, i): ManifestProcess => {
    const p = obj(v, `processes[${i}]`);
    const at = (k: string) => `processes[${i}].${k}`;
    const fdinfoImage = str(p.fdinfoImage, at('fdinfoImage'));
    if (!IMAGE_NAME_RE.test(fdinfoImage)) bad(at('fdinfoImage'), 'is not a plain image file name');
    return {
      pid: int(p.pid, at('pid'), 1), ppid: int(p.ppid, at('ppid')), nsPid: int(p.nsPid, at('nsPid')),
      comm: str(p.comm, at('comm')), cgroup: str(p.cgroup, at('cgroup')), fdinfoImage,
    };
  });
  const files = arr(m.files, 'files').map((v, i): ManifestFile => {
    const f = obj(v, `files[${i}]`);
    const at = (k: string) => `files[${i}].${k}`;
    const d = obj(f.dev, at('dev'));
    return {
      id: int(f.id, at('id'), 1), dev: { major: int(d.major, at('dev.major')), minor: int(d.minor, at('dev.minor')) },
      ino: dec(f.ino, at('ino')), mountPoint: str(f.mountPoint, at('mountPoint')), relPath: str(f.relPath, at('relPath')),
    };
  });
  const skipped = arr(m.skipped, 'skipped').map((v, i): SkippedFd => {
    const k = obj(v, `skipped[${i}]`);
    const at = (x: string) => `skipped[${i}].${x}`;
    const reason = str(k.reason, at('reason'));
    if (!SKIP_REASONS.has(reason)) bad(at('reason'), `"${reason}" is not a known reason`);
    if (typeof k.locked !== 'boolean') bad(at('locked'), 'must be a boolean');
    return {
      pid: int(k.pid, at('pid'), 1), fd: int(k.fd, at('fd')), target: str(k.target, at('target')),
      reason: reason as SkippedFd['reason'], message: str(k.message, at('message')), locked: k.locked as boolean,
    };
  });
  const warnings = m.warnings === undefined ? undefined : arr(m.warnings, 'warnings').map((w, i) => str(w, `warnings[${i}]`));
  const c = obj(m.counts, 'counts');
  const counts = { files: int(c.files, 'counts.files'), fds: int(c.fds, 'counts.fds'), locks: int(c.locks, 'counts.locks') };
  const imgs = obj(m.images, 'images');
  const images: Record<string, ManifestImage> = {};
  for (const [name, v] of Object.entries(imgs)) {
    if (!IMAGE_NAME_RE.test(name)) bad(`images["${name}"]`, 'is not a plain image file name');
    const im = obj(v, `images["${name}"]`);
    const sha256 = str(im.sha256, `images["${name}"].sha256`);
    if (!/^[0-9a-f]{64}$/.test(sha256)) bad(`images["${name}"].sha256`, 'must be 64 hex digits');
    images[name] = { sha256, size: int(im.size, `images["${name}"].size`), entries: int(im.entries, `images["${name}"].entries`) };
  }
  return {
    format: FORMAT_NAME, formatVersion: FORMAT_VERSION, writer: str(m.writer, 'writer'), createdAt: str(m.createdAt, 'createdAt'),
    method, ...(origin ? { origin } : {}), source, processes, files, skipped, ...(warnings ? { warnings } : {}), counts, images,
  };
}
