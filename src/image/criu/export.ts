/**
 * checkpointToCriuImages / writeCriuDirectory: a lockmig checkpoint as a CRIU image directory,
 * for CRIU's tools (`crit show`, `crit decode`, `crit x DIR ps`) — not for `criu restore`,
 * which needs memory, registers and every other fd that lockmig never records.
 *
 *   inventory.img     img_version 2, fdinfo_per_id, root_ids of the root process (no IMG_COMMON)
 *   pstree.img        pid, ppid (0 when the parent is not in the checkpoint), pgid/sid 0 (unknown)
 *   core-<pid>.img    mtype UNKNOWN, tc {task_state ALIVE, comm}; no registers
 *   ids-<pid>.img     files_id = pid, so the fd table is fdinfo-<pid>.img (as in lockmig's own directory)
 *   fdinfo-<pid>.img  fdinfo_entry per recorded fd: file id, FD_CLOEXEC, REG, fd
 *   files.img         file_entry{REG, reg_file_entry{id, flags, pos, name, mnt_id}}
 *   filelocks.img     file_lock_entry per lock (the same entries as lockmig's own filelocks.img)
 *
 * Not written, because lockmig does not record what they need: mountpoints-<ns>.img (mount
 * roots, sources, types), fs-<pid>.img (cwd and root), mm, pages, and the rest.
 * pids are those lockmig recorded (host pids for a `lockmig dump`, CRIU's for an import).
 */
import fs from 'node:fs';
import path from 'node:path';
import type protobuf from 'protobufjs';
import { encodeImage } from '../criu.js';
import { lockLen } from '../checkpoint.js';
import { CRIU_FL, CRIU_LOCK_TYPE, type Checkpoint } from '../model.js';
import { toLong } from '../reference.js';
import { CRIU_IMG_VERSION, CRIU_MAGIC, CriuTypes, FD_TYPE, MARCH_UNKNOWN, TASK_ALIVE } from './schema.js';

function headless(magic: number, type: protobuf.Type, entries: readonly object[]): Buffer {
  const framed = encodeImage(magic, type, entries);
  // encodeImage frames with IMG_COMMON + magic; inventory.img carries only its own magic
  return Buffer.concat([framed.subarray(4, 8), framed.subarray(8)]);
}

const idsOf = (pid: number) => ({ vm_id: pid, files_id: pid, fs_id: pid, sighand_id: pid });

/** The images, by file name. Pure. */
export function checkpointToCriuImages(ckpt: Checkpoint): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const pids = new Set(ckpt.processes.map((p) => p.pid));
  const root = ckpt.processes.find((p) => p.pid === ckpt.source.rootPid) ?? ckpt.processes[0];
  out.set('inventory.img', headless(CRIU_MAGIC.INVENTORY, CriuTypes.inventory, [{
    img_version: CRIU_IMG_VERSION, fdinfo_per_id: true, lsmtype: 0, ...(root ? { root_ids: idsOf(root.pid) } : {}),
  }]));
  out.set('pstree.img', encodeImage(CRIU_MAGIC.PSTREE, CriuTypes.pstree, ckpt.processes.map((p) => ({
    pid: p.pid, ppid: pids.has(p.ppid) && p.ppid !== p.pid ? p.ppid : 0, pgid: 0, sid: 0, threads: [p.pid],
  }))));
  for (const p of ckpt.processes) {
    out.set(`core-${p.pid}.img`, encodeImage(CRIU_MAGIC.CORE, CriuTypes.core, [{
      mtype: MARCH_UNKNOWN,
      tc: { task_state: TASK_ALIVE, exit_code: 0, personality: 0, flags: 0, blk_sigset: toLong(0n, true), comm: p.comm },
    }]));
    out.set(`ids-${p.pid}.img`, encodeImage(CRIU_MAGIC.IDS, CriuTypes.ids, [idsOf(p.pid)]));
    out.set(`fdinfo-${p.pid}.img`, encodeImage(CRIU_MAGIC.FDINFO, CriuTypes.fdinfo, ckpt.fds.filter((d) => d.pid === p.pid).map((d) => ({
      id: d.fileId, flags: d.cloexec ? 1 : 0, type: FD_TYPE.REG, fd: d.fd,
    }))));
  }
  out.set('files.img', encodeImage(CRIU_MAGIC.FILES, CriuTypes.file, ckpt.files.map((f) => ({
    type: FD_TYPE.REG, id: f.id,
    reg: {
      id: f.id, flags: f.flags >>> 0, pos: toLong(f.pos, true), fown: { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 },
      name: f.path, ...(f.mntId >= 0 ? { mnt_id: f.mntId } : {}),
    },
  }))));
  out.set('filelocks.img', encodeImage(CRIU_MAGIC.FILE_LOCKS, CriuTypes.fileLock, ckpt.locks.map((l) => ({
    flag: CRIU_FL[l.kind], type: CRIU_LOCK_TYPE[l.type], pid: l.pid, fd: l.fd,
    start: toLong(l.start, false), len: toLong(lockLen(l), false),
  }))));
  return out;
}

export class ExportError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ExportError';
  }
}

function writeSynced(file: string, data: Buffer): void {
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    for (let off = 0; off < data.length;) off += fs.writeSync(fd, data, off, data.length - off);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
}

/**
 * Write the images into `out` as a whole: they go into a private sibling directory first
 * (0700, every file fsynced), which is then renamed to `out`. `out` must not exist or be an
 * empty directory; a half-written export is never visible under its name.
 */
export function writeCriuDirectory(out: string, ckpt: Checkpoint): { dir: string; images: string[] } {
  const dir = path.resolve(out);
  const parent = path.dirname(dir);
  const existing = fs.statSync(dir, { throwIfNoEntry: false });
  if (existing && !existing.isDirectory()) throw new ExportError(`${dir} exists and is not a directory`);
  if (existing && fs.readdirSync(dir).length > 0) throw new ExportError(`${dir} is not empty: export-criu writes a new directory (remove it or choose another)`);
  const images = checkpointToCriuImages(ckpt);
  const tmp = fs.mkdtempSync(path.join(parent, `.${path.basename(dir)}.lockmig-tmp-`));
  try {
    fs.chmodSync(tmp, 0o700);
    for (const [name, buf] of images) writeSynced(path.join(tmp, name), buf);
    fsyncDir(tmp);
    fs.renameSync(tmp, dir); // replaces an empty directory atomically; fails (ENOTEMPTY) if one appeared meanwhile
    fsyncDir(parent);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (err instanceof ExportError) throw err;
    throw new ExportError(`cannot write ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return { dir, images: [...images.keys()].sort() };
}
