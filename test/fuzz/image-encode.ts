/**
 * A lenient checkpoint encoder for the fuzzers. It produces exactly what writeCheckpoint
 * writes for a valid model (same bytes, same manifest text), but takes "loose" records whose
 * numbers are bigints of any size and whose references need not be consistent, and it keeps
 * every entry as a protobuf field list until `render`, so mutations can work on fields.
 * Nothing here validates: that is the reader's job.
 */
import { createHash } from 'node:crypto';
import type { Checkpoint, ProcessRecord, SkippedFd, SourceIdentity } from '../../src/image/model.js';
import { CRIU_FL, CRIU_LOCK_TYPE } from '../../src/image/model.js';
import { fdinfoFields, fileFields, frame, lockFields, encodeFields, type Field, type RawLock } from './protowire.js';

export const MAGIC = { FILE_LOCKS: 0x54323616, FILES: 0x56303138, FDINFO: 0x56213732 } as const;
const INT64_MAX = (1n << 63n) - 1n;

export interface LooseFile {
  id: bigint;
  path: string | Buffer;
  flags: bigint;
  pos: bigint;
  mntId?: number;
  dev: { major: number; minor: number };
  ino: string;
  mountPoint: string;
  relPath: string;
}
export interface LooseFd { pid: number; fd: bigint; fileId: bigint; flags: bigint; type: bigint }
export interface LooseCheckpoint {
  createdAt: string;
  method: string;
  source: SourceIdentity;
  processes: { -readonly [K in keyof ProcessRecord]: ProcessRecord[K] }[];
  /** manifest fdinfoImage per process (default fdinfo-<pid>.img) */
  fdinfoImage?: Map<number, string>;
  files: LooseFile[];
  fds: LooseFd[];
  locks: RawLock[];
  skipped: SkippedFd[];
  warnings?: string[];
}

export function looseFromModel(c: Checkpoint): LooseCheckpoint {
  return {
    createdAt: c.createdAt, method: c.method, source: structuredClone(c.source) as SourceIdentity, processes: c.processes.map((p) => ({ ...p })),
    files: c.files.map((f) => ({
      id: BigInt(f.id), path: f.path, flags: BigInt(f.flags >>> 0), pos: f.pos, mntId: f.mntId, dev: { ...f.dev }, ino: f.ino.toString(),
      mountPoint: f.mountPoint, relPath: f.relPath,
    })),
    fds: c.fds.map((d) => ({ pid: d.pid, fd: BigInt(d.fd), fileId: BigInt(d.fileId), flags: d.cloexec ? 1n : 0n, type: 1n })),
    locks: c.locks.map((l) => ({
      flag: BigInt(CRIU_FL[l.kind]), type: BigInt(CRIU_LOCK_TYPE[l.type]), pid: BigInt(l.pid), fd: BigInt(l.fd), start: l.start,
      len: l.end === 'EOF' || l.end === INT64_MAX ? 0n : l.end + 1n - l.start,
    })),
    skipped: c.skipped.map((s) => ({ ...s })),
    ...(c.warnings && c.warnings.length > 0 ? { warnings: [...c.warnings] } : {}),
  };
}

export interface DraftImage { magic: number; entries: Field[][] }
/** A checkpoint before serialisation: the manifest object and each image's entries as field lists. */
export interface Draft {
  manifest: Record<string, unknown>;
  images: Map<string, DraftImage>;
}

export const fdinfoName = (pid: number) => `fdinfo-${pid}.img`;

export function draftOf(c: LooseCheckpoint): Draft {
  const images = new Map<string, DraftImage>();
  images.set('filelocks.img', { magic: MAGIC.FILE_LOCKS, entries: c.locks.map(lockFields) });
  images.set('files.img', {
    magic: MAGIC.FILES,
    entries: c.files.map((f) => fileFields({ type: 1n, id: f.id, reg: { id: f.id, flags: f.flags, pos: f.pos, name: f.path, mntId: f.mntId } })),
  });
  const imageOf = (pid: number) => c.fdinfoImage?.get(pid) ?? fdinfoName(pid);
  for (const p of c.processes) {
    const name = imageOf(p.pid);
    if (images.has(name)) continue;
    images.set(name, { magic: MAGIC.FDINFO, entries: c.fds.filter((d) => d.pid === p.pid).map((d) => fdinfoFields({ id: d.fileId, flags: d.flags, type: d.type, fd: d.fd })) });
  }
  const manifest: Record<string, unknown> = {
    format: 'lockmig-checkpoint', formatVersion: 1, writer: 'lockmig 0.1.0', createdAt: c.createdAt, method: c.method,
    source: c.source,
    processes: c.processes.map((p) => ({ ...p, fdinfoImage: imageOf(p.pid) })),
    files: c.files.map((f) => ({ id: Number(f.id), dev: { major: f.dev.major, minor: f.dev.minor }, ino: f.ino, mountPoint: f.mountPoint, relPath: f.relPath })),
    skipped: c.skipped,
    ...(c.warnings && c.warnings.length > 0 ? { warnings: c.warnings } : {}),
    counts: { files: c.files.length, fds: c.fds.length, locks: c.locks.length },
    images: {},
  };
  return { manifest, images };
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export function manifestText(m: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(m, null, 2)}\n`);
}

/**
 * Serialise a draft: frame every image, record its checksum, size and entry count in
 * manifest.images (unless `keepImages`: the draft's manifest.images is used as it is).
 */
export function render(d: Draft, opts: { keepImages?: boolean } = {}): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const images: Record<string, unknown> = {};
  for (const [name, im] of d.images) {
    const buf = frame(im.magic, im.entries.map(encodeFields));
    out.set(name, buf);
    images[name] = { sha256: sha256(buf), size: buf.length, entries: im.entries.length };
  }
  const m = opts.keepImages ? d.manifest : { ...d.manifest, images };
  out.set('manifest.json', manifestText(m));
  return out;
}

/**
 * Re-seal: record the current checksum and size of the named images in manifest.json, so a
 * mutation reaches the decoder instead of stopping at the checksum. Returns false when the
 * manifest is not parseable JSON (then nothing changes).
 */
export function reseal(files: Map<string, Buffer>, names: readonly string[]): boolean {
  const mb = files.get('manifest.json');
  if (!mb) return false;
  let m: Record<string, unknown>;
  try { m = JSON.parse(mb.toString('utf8')) as Record<string, unknown>; } catch { return false; }
  if (m === null || typeof m !== 'object' || typeof m.images !== 'object' || m.images === null) return false;
  const images = m.images as Record<string, Record<string, unknown>>;
  for (const n of names) {
    const b = files.get(n);
    if (!b) continue;
    images[n] = { ...(images[n] ?? { entries: 0 }), sha256: sha256(b), size: b.length };
  }
  files.set('manifest.json', manifestText(m));
  return true;
}
