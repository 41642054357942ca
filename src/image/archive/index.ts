/**
 * importCheckpointArchive: a container checkpoint archive → lockmig's checkpoint model.
 *
 * The layout, shared by the kubelet checkpoint API with CRI-O (/var/lib/kubelet/checkpoints/
 * checkpoint-<pod>_<ns>-<container>-<time>.tar, uncompressed), `podman container checkpoint
 * --export` (zstd by default, gzip or none with --compress) and containerd:
 *
 *   checkpoint/            the CRIU images (inventory.img, pstree.img, files.img, fdinfo-N.img,
 *                          filelocks.img, mountpoints-N.img, …, and the memory pages)
 *   spec.dump              the container's OCI runtime spec (JSON); its annotations name the
 *                          engine (io.container.manager) and, under Kubernetes, the pod
 *   config.dump            id, name, checkpointedTime of the container (JSON)
 *   stats-dump, dump.log, rootfs-diff.tar, deleted.files, bind.mounts, network.status, …
 *
 * Entry names may carry a "./" prefix. An archive of a bare CRIU directory (images at the top)
 * is read too. Only the small images lockmig needs and the two .dump files are taken into
 * memory (bounded); memory pages and the root file system diff are skipped unread when the
 * archive is uncompressed. Nothing is extracted to disk. Every refusal is an ImageError.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ImageError } from '../errors.js';
import type { Checkpoint, CheckpointOrigin, SourceIdentity } from '../model.js';
import { readCriuImages } from '../criu/read.js';
import { criuToCheckpoint } from '../criu/import.js';
import { memorySource, DEFAULT_CRIU_LIMITS, type CriuReadLimits } from '../criu/source.js';
import { expandLimitsFromEnv, openTarData, sniffCompression, type ExpandLimits } from './bytes.js';
import { walkTar, DEFAULT_TAR_LIMITS, type TarEntry, type TarLimits } from './tar.js';

export interface ArchiveImportOptions {
  readonly criuLimits?: CriuReadLimits;
  /** default: DEFAULT_EXPAND_LIMITS with LOCKMIG_ARCHIVE_MAX_BYTES / LOCKMIG_ARCHIVE_MAX_RATIO applied */
  readonly expandLimits?: ExpandLimits;
  readonly tarLimits?: TarLimits;
  /** most bytes of entries held in memory at once (images + .dump files) */
  readonly maxBufferedBytes?: number;
  readonly now?: () => Date;
  /** called as the archive is read, with the tar data offset */
  readonly onProgress?: (offset: number) => void;
}

/** The images lockmig reads (src/image/criu/read.ts); everything else in checkpoint/ is skipped. */
const NEEDED_IMAGE = /^(?:inventory|pstree|files|reg-files|filelocks|remap-fpath)\.img$|^(?:core|ids|fdinfo|mountpoints|utsns)-\d+\.img$/;
const META_FILES = new Set(['spec.dump', 'config.dump']);
const MAX_META_BYTES = 16 << 20;
const DEFAULT_MAX_BUFFERED = 512 << 20;
const PROGRESS_STEP = 256 << 20;

interface Held { readonly data: Buffer; readonly mtime: Date }

interface ContainerMeta {
  readonly engine?: string;
  readonly hostname?: string;
  readonly pod?: SourceIdentity['pod'];
  readonly container?: { id?: string; name?: string };
  readonly checkpointedAt?: string;
}

function parseJson(buf: Buffer | undefined, label: string): Record<string, unknown> | undefined {
  if (!buf) return undefined;
  let v: unknown;
  try { v = JSON.parse(buf.toString('utf8')); } catch (err) {
    throw new ImageError('INVALID', label, `is not valid JSON (${(err as Error).message})`, undefined, { cause: err });
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ImageError('INVALID', label, 'is not a JSON object');
  return v as Record<string, unknown>;
}

const s = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** What spec.dump / config.dump say about the container (informational: never trusted for paths). */
export function containerMeta(spec: Record<string, unknown> | undefined, config: Record<string, unknown> | undefined): ContainerMeta {
  const ann = (spec?.annotations !== null && typeof spec?.annotations === 'object' ? spec.annotations : {}) as Record<string, unknown>;
  const a = (k: string) => s(ann[k]);
  const manager = a('io.container.manager');
  let engine: string | undefined;
  let pod: SourceIdentity['pod'];
  if (manager === 'cri-o') {
    engine = 'CRI-O';
    const ns = a('io.kubernetes.pod.namespace');
    const name = a('io.kubernetes.pod.name');
    if (ns && name) {
      const c = a('io.kubernetes.container.name');
      pod = { namespace: ns, name, uid: a('io.kubernetes.pod.uid') ?? '', ...(c ? { containers: [c] } : {}) };
    }
  } else if (manager === 'libpod') {
    engine = 'Podman';
  } else if (a('io.kubernetes.cri.container-name') || a('io.kubernetes.cri.sandbox-name')) {
    engine = 'containerd';
    const ns = a('io.kubernetes.cri.sandbox-namespace');
    const name = a('io.kubernetes.cri.sandbox-name');
    if (ns && name) {
      const c = a('io.kubernetes.cri.container-name');
      pod = { namespace: ns, name, uid: a('io.kubernetes.cri.sandbox-uid') ?? '', ...(c ? { containers: [c] } : {}) };
    } 
  }
  const id = s(config?.id);
  const cname = pod?.containers?.[0] ?? s(config?.name);
  const t = s(config?.checkpointedTime);
  const checkpointedAt = t && !t.startsWith('0001-') && !Number.isNaN(Date.parse(t)) ? new Date(t).toISOString() : undefined;
  return {
    ...(engine ? { engine } : {}), ...(s(spec?.hostname) ? { hostname: s(spec?.hostname) } : {}), ...(pod ? { pod } : {}),
    ...(id || cname ? { container: { ...(id ? { id } : {}), ...(cname ? { name: cname } : {}) } } : {}),
    ...(checkpointedAt ? { checkpointedAt } : {}),
  };
}

export async function importCheckpointArchive(file: string, opts: ArchiveImportOptions = {}): Promise<Checkpoint> {
  const criuLimits = opts.criuLimits ?? DEFAULT_CRIU_LIMITS;
  const maxBuffered = opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED;
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ImageError(code === 'ENOENT' ? 'MISSING' : 'INVALID', file, `cannot open the archive: ${(err as Error).message}`, undefined, { cause: err });
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new ImageError('INVALID', file, 'is not a regular file');
    const head = Buffer.alloc(Math.min(512, st.size));
    fs.readSync(fd, head, 0, head.length, 0);
    const compression = sniffCompression(head, file);
    const src = openTarData(file, fd, st.size, compression, opts.expandLimits ?? expandLimitsFromEnv());

    const held = new Map<string, Held>(); // normalised entry name → data
    let buffered = 0;
    let nextProgress = PROGRESS_STEP;
    const role = (e: TarEntry): 'image' | 'meta' | null => {
      const slash = e.name.lastIndexOf('/');
      const dir = slash < 0 ? '' : e.name.slice(0, slash);
      const base = e.name.slice(slash + 1);
      if ((dir === 'checkpoint' || dir === '') && NEEDED_IMAGE.test(base)) return 'image';
      if (dir === '' && META_FILES.has(base)) return 'meta';
      return null;
    };
    try {
      await walkTar(src, file, (e) => {
        if (opts.onProgress && src.offset >= nextProgress) { opts.onProgress(src.offset); nextProgress = src.offset + PROGRESS_STEP; }
        const r = role(e);
        if (r === null) return null;
        const at = (msg: string): never => { throw new ImageError('INVALID', `${file}:${e.name}`, msg, e.offset); };
        if (e.type !== 'file') at(`is a ${e.type} entry in the archive; lockmig reads ${r === 'image' ? 'CRIU images' : 'container metadata'} only from regular file entries (refusing)`);
        if (held.has(e.name)) at('appears twice in the archive: refusing an ambiguous archive (extracting it would keep the later copy)');
        const cap = r === 'image' ? criuLimits.maxImageBytes : MAX_META_BYTES;
        if (buffered + e.size > maxBuffered) at(`would bring the images held in memory over ${maxBuffered} bytes`);
        return cap;
      }, (e, data) => {
        held.set(e.name, { data, mtime: e.mtime });
        buffered += data.length;
      }, opts.tarLimits ?? DEFAULT_TAR_LIMITS);
    } finally {
      src.close();
    }

    const prefix = held.has('checkpoint/inventory.img') ? 'checkpoint/' : held.has('inventory.img') ? '' : null;
    if (prefix === null) {
      throw new ImageError('MISSING', file, 'holds no CRIU images (no checkpoint/inventory.img): not a kubelet, CRI-O, Podman or containerd checkpoint archive');
    }
    const images = new Map<string, Held>();
    for (const [name, h] of held) {
      if (prefix === 'checkpoint/' ? name.startsWith(prefix) : !name.includes('/')) {
        const base = name.slice(prefix.length);
        if (NEEDED_IMAGE.test(base)) images.set(base, h);
      }
    }
    const meta = containerMeta(parseJson(held.get('spec.dump')?.data, `${file}:spec.dump`), parseJson(held.get('config.dump')?.data, `${file}:config.dump`));
    const dump = readCriuImages(memorySource(images, (name) => `${file}:${prefix}${name}`), criuLimits);
    const origin: CheckpointOrigin = {
      kind: 'archive', path: path.resolve(file), criuImgVersion: dump.imgVersion, compression,
      ...(meta.engine ? { engine: meta.engine } : {}), ...(meta.container ? { container: meta.container } : {}),
    };
    return criuToCheckpoint(dump, {
      origin,
      ...(meta.checkpointedAt ? { createdAt: meta.checkpointedAt } : {}),
      ...(dump.hostname === undefined && meta.hostname ? { hostname: meta.hostname } : {}),
      ...(meta.pod ? { pod: meta.pod } : {}),
      ...(opts.now ? { now: opts.now } : {}),
    });
  } finally {
    fs.closeSync(fd);
  }
}
