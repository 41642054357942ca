/**
 * writeCheckpoint / readCheckpoint: a Checkpoint ⇄ a directory of CRIU-style images plus
 * manifest.json.
 *
 *   filelocks.img      FILE_LOCKS  file_lock_entry per lock (CRIU's format exactly)
 *   files.img          FILES       file_entry{type REG, reg: reg_file_entry} per open file description
 *   fdinfo-<pid>.img   FDINFO      fdinfo_entry per recorded fd of that process (flags = FD_CLOEXEC)
 *   manifest.json      lockmig's own: version, identity, per-file dev/ino/mount-relative path,
 *                      skipped fds, sha256 of every image (written last)
 *
 * A lock's FileRecord is not stored in file_lock_entry: it is the file behind (pid, fd),
 * which the fdinfo images give. Every image is written atomically (temp file, fsync,
 * rename, fsync of the directory). readCheckpoint validates everything before returning
 * and throws ImageError; it never returns part of a checkpoint.
 */
import { createHash } from 'node:crypto';
import {
  closeSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, writeSync, constants as fsc,
} from 'node:fs';
import path from 'node:path';
import { ImageError } from './errors.js';
import {
  FILELOCKS_IMG, FILES_IMG, FORMAT_NAME, FORMAT_VERSION, MANIFEST, fdinfoImageName, validateManifest,
  type Manifest, type ManifestImage,
} from './manifest.js';
import { CRIU_FL, CRIU_LOCK_TYPE, type Checkpoint, type FdRecord, type FileRecord, type LockKind, type LockRecord, type LockType } from './model.js';
import { FD_TYPE_REG, FdinfoEntry, FileEntry, FileLockEntry, MAGIC, fromLong } from './proto.js';
import { decodeImage } from './criu.js';
import { encodeFdinfo, encodeFileLocks, encodeFiles } from './encode.js';
import { MAX_IMAGE_BYTES, MAX_MANIFEST_BYTES, readCheckpointFile } from './safe-read.js';

const INT64_MAX = (1n << 63n) - 1n;
const UINT64_MAX = (1n << 64n) - 1n;
const O_CLOEXEC = 0o2000000;
const WRITER = 'lockmig 0.1.0';

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try { fsyncSync(fd); } finally { closeSync(fd); }
}

/** Write `data` to a new temporary file in `dir` (not synced yet); returns its fd and path. */
function writeTemp(dir: string, name: string, data: Buffer): { fd: number; tmp: string; final: string } {
  const final = path.join(dir, name);
  const tmp = path.join(dir, `.${name}.tmp-${process.pid}`);
  const fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | O_CLOEXEC, 0o600);
  try {
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  return { fd, tmp, final };
}

/**
 * Flushes files to disk; returns an errno per fd (0 = ok). The default is one fsync(2) after the
 * other; a caller with liblockmig passes its parallel fsync (the filesystem then commits the
 * files in one journal transaction instead of one each).
 */
export type SyncAll = (fds: readonly number[]) => readonly number[];

const syncEach: SyncAll = (fds) => fds.map((fd) => {
  try { fsyncSync(fd); return 0; } catch (err) { return (err as NodeJS.ErrnoException).errno ? -((err as NodeJS.ErrnoException).errno!) : 5; }
});

/** CRIU's len: 0 = to EOF, else end + 1 - start. An end at OFFSET_MAX is EOF to the kernel too. */
export function lockLen(l: Pick<LockRecord, 'start' | 'end'>): bigint {
  return l.end === 'EOF' || l.end === INT64_MAX ? 0n : l.end + 1n - l.start;
}

function checkModel(ckpt: Checkpoint): void {
  const fail = (msg: string): never => { throw new Error(`writeCheckpoint: invalid checkpoint: ${msg}`); };
  const pids = new Set<number>();
  for (const p of ckpt.processes) { if (pids.has(p.pid)) fail(`process ${p.pid} listed twice`); pids.add(p.pid); }
  const fileIds = new Set<number>();
  for (const f of ckpt.files) {
    if (!Number.isInteger(f.id) || f.id < 1 || f.id > 0xffffffff) fail(`file id ${f.id} out of range`);
    if (fileIds.has(f.id)) fail(`file id ${f.id} used twice`);
    if (f.pos < 0n || f.pos > UINT64_MAX) fail(`file ${f.id} pos ${f.pos} out of range`);
    fileIds.add(f.id);
  }
  const fdKeys = new Map<string, number>();
  for (const d of ckpt.fds) {
    if (!pids.has(d.pid)) fail(`fd ${d.fd} of pid ${d.pid}: pid is not among the processes`);
    if (!fileIds.has(d.fileId)) fail(`fd ${d.fd} of pid ${d.pid}: file ${d.fileId} does not exist`);
    const k = `${d.pid}/${d.fd}`;
    if (fdKeys.has(k)) fail(`fd ${d.fd} of pid ${d.pid} listed twice`);
    fdKeys.set(k, d.fileId);
  }
  for (const l of ckpt.locks) {
    const fid = fdKeys.get(`${l.pid}/${l.fd}`);
    if (fid === undefined) fail(`${l.kind} lock of pid ${l.pid} on fd ${l.fd}: no such fd recorded`);
    if (fid !== l.fileId) fail(`${l.kind} lock of pid ${l.pid} fd ${l.fd}: fileId ${l.fileId} but the fd holds file ${fid}`);
    if (l.start < 0n || l.start > INT64_MAX || (l.end !== 'EOF' && (l.end < l.start || l.end > INT64_MAX))) {
      fail(`${l.kind} lock of pid ${l.pid} fd ${l.fd}: range ${l.start}..${l.end} out of range`);
    }
  }
}

/** Write `ckpt` into `dir` (created 0700 if missing). Throws on an inconsistent model. */
export function writeCheckpoint(dir: string, ckpt: Checkpoint, opts: { readonly syncAll?: SyncAll } = {}): void {
  checkModel(ckpt);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // A half-written directory must never look complete: drop the old manifest first.
  rmSync(path.join(dir, MANIFEST), { force: true });

  const images: Record<string, ManifestImage> = {};
  const bufs: [string, Buffer][] = [];
  const put = (name: string, buf: Buffer, entries: number): void => {
    bufs.push([name, buf]);
    images[name] = { sha256: sha256(buf), size: buf.length, entries };
  };

  put(FILELOCKS_IMG, encodeFileLocks(ckpt.locks.map((l) => ({
    flag: CRIU_FL[l.kind], type: CRIU_LOCK_TYPE[l.type], pid: l.pid, fd: l.fd, start: l.start, len: lockLen(l),
  }))), ckpt.locks.length);

  put(FILES_IMG, encodeFiles(ckpt.files), ckpt.files.length);

  const fdsOf = new Map<number, FdRecord[]>();
  for (const d of ckpt.fds) {
    let l = fdsOf.get(d.pid);
    if (!l) { l = []; fdsOf.set(d.pid, l); }
    l.push(d);
  }
  for (const p of ckpt.processes) {
    const mine = fdsOf.get(p.pid) ?? [];
    put(fdinfoImageName(p.pid), encodeFdinfo(mine), mine.length);
  }

  const manifest: Manifest = {
    format: FORMAT_NAME, formatVersion: FORMAT_VERSION, writer: WRITER, createdAt: ckpt.createdAt, method: ckpt.method,
    ...(ckpt.origin ? { origin: ckpt.origin } : {}),
    source: ckpt.source,
    processes: ckpt.processes.map((p) => ({ ...p, fdinfoImage: fdinfoImageName(p.pid) })),
    files: ckpt.files.map((f) => ({ id: f.id, dev: { major: f.dev.major, minor: f.dev.minor }, ino: f.ino.toString(), mountPoint: f.mountPoint, relPath: f.relPath })),
    skipped: ckpt.skipped,
    ...(ckpt.warnings && ckpt.warnings.length > 0 ? { warnings: ckpt.warnings } : {}),
    counts: { files: ckpt.files.length, fds: ckpt.fds.length, locks: ckpt.locks.length },
    images,
  };

  // Every file is written to a temporary name and flushed (all at once when the caller can),
  // then the images are renamed into place and the directory flushed, and only then the
  // manifest: a directory either is complete or has no manifest.
  const temps: { fd: number; tmp: string; final: string }[] = [];
  try {
    for (const [name, buf] of bufs) temps.push(writeTemp(dir, name, buf));
    temps.push(writeTemp(dir, MANIFEST, Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`)));
    const errs = (opts.syncAll ?? syncEach)(temps.map((t) => t.fd));
    const bad = errs.findIndex((e) => e !== 0);
    if (bad >= 0) throw Object.assign(new Error(`fsync of ${temps[bad]!.tmp} failed (errno ${Math.abs(errs[bad]!)})`), { code: 'EIO' });
  } catch (err) {
    for (const t of temps) { closeSync(t.fd); rmSync(t.tmp, { force: true }); }
    throw err;
  }
  for (const t of temps) closeSync(t.fd);
  const manifestTemp = temps.pop()!;
  for (const t of temps) renameSync(t.tmp, t.final);
  fsyncDir(dir);
  renameSync(manifestTemp.tmp, manifestTemp.final);
  fsyncDir(dir);
  // fdinfo images of processes an older checkpoint in this directory had (never other files)
  for (const name of readdirSync(dir)) {
    if (/^fdinfo-\d+\.img$/.test(name) && !(name in images)) rmSync(path.join(dir, name), { force: true });
  }
}

function readFileOrThrow(dir: string, name: string, what: string, expectSize?: number): Buffer {
  return readCheckpointFile(path.join(dir, name), {
    what, maxBytes: name === MANIFEST ? MAX_MANIFEST_BYTES : MAX_IMAGE_BYTES, ...(expectSize !== undefined ? { expectSize } : {}),
  });
}

const KIND_BY_FLAG = new Map<number, LockKind>(Object.entries(CRIU_FL).map(([k, v]) => [v, k as LockKind]));
const TYPE_BY_NUM = new Map<number, LockType>(Object.entries(CRIU_LOCK_TYPE).map(([k, v]) => [v, k as LockType]));

/** Read and fully validate a checkpoint directory. Throws ImageError, never returns a partial result. */
export function readCheckpoint(dir: string): Checkpoint {
  const mpath = path.join(dir, MANIFEST);
  const mbuf = readFileOrThrow(dir, MANIFEST, 'the lockmig manifest (is this a lockmig checkpoint directory?)');
  let raw: unknown;
  try {
    raw = JSON.parse(mbuf.toString('utf8'));
  } catch (err) {
    const msg = (err as Error).message;
    const truncated = /end of JSON input|Unterminated/.test(msg);
    throw new ImageError(truncated ? 'TRUNCATED' : 'INVALID', mpath, `not valid JSON (${msg})`, undefined, { cause: err });
  }
  const man = validateManifest(raw, mpath);

  // Checksums first: nothing is decoded from a file that is not the one the manifest names.
  const bufs = new Map<string, Buffer>();
  for (const [name, im] of Object.entries(man.images)) {
    const file = path.join(dir, name);
    // sizes are compared before anything is read (a sparse file may claim terabytes)
    const b = readFileOrThrow(dir, name, `image ${name} listed in the manifest`, im.size);
    const sum = sha256(b);
    if (sum !== im.sha256) throw new ImageError('CHECKSUM', file, `sha256 ${sum} does not match the manifest (${im.sha256}): the file was changed or corrupted`);
    bufs.set(name, b);
  }
  const need = (name: string): Buffer => {
    const b = bufs.get(name);
    if (!b) throw new ImageError('MISSING', mpath, `images has no entry for ${name}`);
    return b;
  };
  const invalid = (file: string, msg: string, offset?: number): never => { throw new ImageError('INVALID', path.join(dir, file), msg, offset); };

  // files.img + manifest extras
  const extras = new Map(man.files.map((f) => [f.id, f]));
  if (extras.size !== man.files.length) invalid(MANIFEST, 'files lists an id twice');
  const files: FileRecord[] = [];
  const fileIds = new Set<number>();
  const fileOffset = new Map<number, number>(); // where each file_entry starts, for later errors
  for (const { offset, message: m } of decodeImage(need(FILES_IMG), path.join(dir, FILES_IMG), MAGIC.FILES, 'FILES', FileEntry)) {
    const reg = m.reg as (Record<string, unknown> | null | undefined);
    if (m.type !== FD_TYPE_REG || !reg) invalid(FILES_IMG, `file_entry ${String(m.id)} is not a regular file entry`, offset);
    const id = m.id as number;
    if (reg!.id !== id) invalid(FILES_IMG, `file_entry id ${id} holds reg_file_entry id ${String(reg!.id)}`, offset);
    if (fileIds.has(id)) invalid(FILES_IMG, `file id ${id} appears twice`, offset);
    const ex = extras.get(id);
    if (!ex) invalid(FILES_IMG, `file id ${id} has no entry in manifest.json files`, offset);
    const name = reg!.name as string;
    if (!name.startsWith('/')) invalid(FILES_IMG, `file ${id} path ${JSON.stringify(name)} is not absolute`, offset);
    fileIds.add(id);
    fileOffset.set(id, offset);
    files.push({
      id, path: name, flags: ((reg!.flags as number) & ~O_CLOEXEC) >>> 0, pos: fromLong(reg!.pos),
      mntId: typeof reg!.mnt_id === 'number' ? reg!.mnt_id : -1,
      dev: { major: ex!.dev.major, minor: ex!.dev.minor }, ino: BigInt(ex!.ino), mountPoint: ex!.mountPoint, relPath: ex!.relPath,
    });
  }
  if (fileIds.size !== extras.size) invalid(MANIFEST, `files lists ${extras.size} files but ${FILES_IMG} holds ${fileIds.size}`);

  // fdinfo-<pid>.img
  const fds: FdRecord[] = [];
  const fdFile = new Map<string, number>();
  for (const p of man.processes) {
    const img = p.fdinfoImage;
    for (const { offset, message: m } of decodeImage(need(img), path.join(dir, img), MAGIC.FDINFO, 'FDINFO', FdinfoEntry)) {
      const fd = m.fd as number;
      const fileId = m.id as number;
      if (m.type !== FD_TYPE_REG) invalid(img, `fd ${fd} is not of type REG`, offset);
      if (!fileIds.has(fileId)) invalid(img, `fd ${fd} refers to file ${fileId}, which ${FILES_IMG} does not hold`, offset);
      if (fd > 0x7fffffff) invalid(img, `fd ${fd} out of range`, offset);
      const key = `${p.pid}/${fd}`;
      if (fdFile.has(key)) invalid(img, `fd ${fd} appears twice`, offset);
      fdFile.set(key, fileId);
      fds.push({ pid: p.pid, fd, fileId, cloexec: ((m.flags as number) & 1) !== 0 });
    }
  }
  const pids = new Set(man.processes.map((p) => p.pid));
  if (pids.size !== man.processes.length) invalid(MANIFEST, 'processes lists a pid twice');

  // filelocks.img
  const locks: LockRecord[] = [];
  for (const { offset, message: m } of decodeImage(need(FILELOCKS_IMG), path.join(dir, FILELOCKS_IMG), MAGIC.FILE_LOCKS, 'FILE_LOCKS', FileLockEntry)) {
    const kind = KIND_BY_FLAG.get(m.flag as number);
    if (!kind) invalid(FILELOCKS_IMG, `unknown lock flag ${String(m.flag)}`, offset);
    const type = TYPE_BY_NUM.get(m.type as number);
    if (!type) invalid(FILELOCKS_IMG, `unknown lock type ${String(m.type)}`, offset);
    const pid = m.pid as number;
    const fd = m.fd as number;
    const fileId = fdFile.get(`${pid}/${fd}`);
    if (fileId === undefined) invalid(FILELOCKS_IMG, `${kind} lock on fd ${fd} of pid ${pid}: no such fd in the fdinfo images`, offset);
    const start = fromLong(m.start);
    const len = fromLong(m.len);
    if (start < 0n || len < 0n || (len > 0n && start + len - 1n > INT64_MAX)) {
      invalid(FILELOCKS_IMG, `${kind} lock on fd ${fd} of pid ${pid}: bad range start ${start} len ${len}`, offset);
    }
    // a range ending at OFFSET_MAX is "to EOF" for the kernel (/proc/locks prints EOF) and for
    // lockLen: one form in the model, so a read-write round trip never changes a lock
    const end = len === 0n || start + len - 1n === INT64_MAX ? 'EOF' : start + len - 1n;
    locks.push({ kind: kind!, type: type!, start, end, pid, fd, fileId: fileId! });
  }

  // counts cross-check
  if (man.counts.locks !== locks.length || man.counts.files !== files.length || man.counts.fds !== fds.length) {
    invalid(MANIFEST, `counts say ${man.counts.locks} locks/${man.counts.files} files/${man.counts.fds} fds, images hold ${locks.length}/${files.length}/${fds.length}`);
  }
  const referenced = new Set(fds.map((d) => d.fileId));
  for (const f of files) if (!referenced.has(f.id)) invalid(FILES_IMG, `file ${f.id} (${JSON.stringify(f.path)}) is not referenced by any fd`, fileOffset.get(f.id));

  return {
    formatVersion: man.formatVersion, createdAt: man.createdAt, source: man.source, method: man.method,
    ...(man.origin ? { origin: man.origin } : {}),
    processes: man.processes.map(({ fdinfoImage: _img, ...p }) => p),
    files, fds, locks, skipped: man.skipped,
    ...(man.warnings ? { warnings: man.warnings } : {}),
  };
}
