/**
 * readCriuImages: decode and cross-check the CRIU images that describe open files and locks,
 * into plain typed records (no mapping to lockmig's model yet: src/image/criu/import.ts).
 *
 * What is read, and how CRIU lays it out (checkpoint-restore/criu v4.2):
 *   inventory.img        img_version (must be 2), fdinfo_per_id; no IMG_COMMON magic
 *   pstree.img           one pstree_entry per process: pid (in the dumped pid namespace), ppid
 *   core-<pid>.img       tc.comm, and the process's ids in newer CRIU
 *   ids-<pid>.img        task_kobj_ids_entry: files_id (→ fdinfo-<files_id>.img), mnt_ns_id, uts_ns_id
 *   fdinfo-<id>.img      fdinfo_entry per fd: file id, FD_CLOEXEC, type, fd number
 *   files.img            file_entry per open file description (reg-files.img in old CRIU)
 *   filelocks.img        file_lock_entry per lock (only with --file-locks)
 *   remap-fpath.img      files that were unlinked (ghost/linked remaps) or /proc paths
 *   mountpoints-<ns>.img mnt_entry per mount of a dumped mount namespace
 *   utsns-<ns>.img       nodename
 *
 * Every image is bounded (size, entry count) and every failure is an ImageError naming the
 * image and the byte offset of the entry; nothing is returned from a set that fails a check.
 */
import { ImageError } from '../errors.js';
import { decodeImage, type DecodedEntry } from '../criu.js';
import { fromLong } from '../proto.js';
import { CRIU_IMG_VERSION, CRIU_MAGIC, CriuTypes, REMAP_TYPE, FD_TYPE } from './schema.js';
import { DEFAULT_CRIU_LIMITS, type CriuImageSource, type CriuReadLimits } from './source.js';

export interface CriuProcess {
  readonly pid: number;
  readonly ppid: number;
  readonly pgid: number;
  readonly sid: number;
  readonly threads: readonly number[];
  /** from core-<pid>.img, when present */
  readonly comm?: string;
  /** image holding this process's fds */
  readonly fdinfoImage: string;
  readonly mntNsId?: number;
  readonly utsNsId?: number;
}

export interface CriuFd {
  readonly fd: number;
  /** file_entry id */
  readonly id: number;
  /** FD_CLOEXEC */
  readonly cloexec: boolean;
  readonly type: number;
}

export interface CriuRegFile {
  readonly id: number;
  readonly flags: number;
  readonly pos: bigint;
  readonly name: string;
  /** -1 when the mount namespace was not dumped */
  readonly mntId: number;
  readonly mode?: number;
  readonly ext: boolean;
}

export interface CriuFile {
  readonly id: number;
  readonly type: number;
  readonly reg?: CriuRegFile;
}

export interface CriuLock {
  readonly flag: number;
  readonly type: number;
  readonly pid: number;
  readonly fd: number;
  readonly start: bigint;
  readonly len: bigint;
  /** byte offset of the entry in filelocks.img, for messages */
  readonly offset: number;
}

export interface CriuMount {
  readonly mntId: number;
  readonly parentMntId: number;
  readonly rootDev: number;
  readonly fstype: number;
  readonly root: string;
  /** absolute, in the mount namespace */
  readonly mountpoint: string;
  readonly source: string;
  readonly extKey?: string;
  readonly deleted: boolean;
  readonly nsId: number;
}

export interface CriuDump {
  readonly imgVersion: number;
  /** how to name an image in messages (the source's label) */
  readonly label: (name: string) => string;
  readonly processes: readonly CriuProcess[];
  /** pid → fds (a shared fd table appears under each pid that uses it) */
  readonly fds: ReadonlyMap<number, readonly CriuFd[]>;
  readonly files: ReadonlyMap<number, CriuFile>;
  /** null when filelocks.img is absent (CRIU writes it only with --file-locks) */
  readonly locks: readonly CriuLock[] | null;
  /** orig file id → remap type */
  readonly remaps: ReadonlyMap<number, 'LINKED' | 'GHOST' | 'PROCFS' | 'UNKNOWN'>;
  /** mnt_id → mount, over every dumped mount namespace; null when no mountpoints image exists */
  readonly mounts: ReadonlyMap<number, CriuMount> | null;
  readonly hostname?: string;
  /** mtime of inventory.img, when the source knows it */
  readonly writtenAt?: Date;
}

type Msg = Record<string, unknown>;

const U31 = 0x7fffffff;

export function readCriuImages(src: CriuImageSource, limits: CriuReadLimits = DEFAULT_CRIU_LIMITS): CriuDump {
  const decode = (name: string, magic: number, magicName: string, type: Parameters<typeof decodeImage>[4], headless = false): DecodedEntry[] =>
    decodeImage(src.read(name), src.label(name), magic, magicName, type, { headless, maxEntries: limits.maxEntries });
  const invalid = (name: string, msg: string, offset?: number): never => { throw new ImageError('INVALID', src.label(name), msg, offset); };
  const u32 = (v: unknown, name: string, what: string, offset: number, max = 0xffffffff): number =>
    (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max ? v : invalid(name, `${what} ${String(v)} is out of range`, offset));

  if (!src.has('inventory.img')) {
    throw new ImageError('MISSING', src.label('inventory.img'), 'is missing: not a CRIU image directory (criu dump writes inventory.img)');
  }
  const inv = decode('inventory.img', CRIU_MAGIC.INVENTORY, 'INVENTORY', CriuTypes.inventory, true);
  if (inv.length !== 1) invalid('inventory.img', `holds ${inv.length} entries, expected 1`);
  const invMsg = inv[0]!.message as Msg;
  const imgVersion = invMsg.img_version as number;
  if (imgVersion !== CRIU_IMG_VERSION) {
    throw new ImageError('VERSION', src.label('inventory.img'), `img_version ${imgVersion} is not supported (CRIU ≥ 1.x writes ${CRIU_IMG_VERSION})`, inv[0]!.offset);
  }
  const fdinfoPerId = invMsg.fdinfo_per_id === true;

  // pstree.img
  const processes: CriuProcess[] = [];
  const pids = new Set<number>();
  const pst = decode('pstree.img', CRIU_MAGIC.PSTREE, 'PSTREE', CriuTypes.pstree);
  if (pst.length === 0) invalid('pstree.img', 'holds no process');
  for (const { offset, message } of pst) {
    const m = message as Msg;
    const pid = u32(m.pid, 'pstree.img', 'pid', offset, U31);
    if (pid < 1) invalid('pstree.img', 'pid 0', offset);
    if (pids.has(pid)) invalid('pstree.img', `pid ${pid} appears twice`, offset);
    pids.add(pid);
    const threads = ((m.threads as unknown[] | undefined) ?? []).map((x) => u32(x, 'pstree.img', 'thread id', offset, U31));
    let comm: string | undefined;
    let ids: Msg | undefined;
    const coreName = `core-${pid}.img`;
    if (src.has(coreName)) {
      const core = decode(coreName, CRIU_MAGIC.CORE, 'CORE', CriuTypes.core);
      if (core.length !== 1) invalid(coreName, `holds ${core.length} entries, expected 1`);
      const c = core[0]!.message as Msg;
      const tc = c.tc as Msg | null | undefined;
      if (tc && typeof tc.comm === 'string') comm = tc.comm;
      if (c.ids) ids = c.ids as Msg;
    }
    const idsName = `ids-${pid}.img`;
    if (!ids && src.has(idsName)) {
      const e = decode(idsName, CRIU_MAGIC.IDS, 'IDS', CriuTypes.ids);
      if (e.length !== 1) invalid(idsName, `holds ${e.length} entries, expected 1`);
      ids = e[0]!.message as Msg;
    }
    let fdinfoImage = `fdinfo-${pid}.img`;
    if (fdinfoPerId) {
      if (!ids) throw new ImageError('MISSING', src.label(idsName), `is missing: the fd table of pid ${pid} cannot be found (inventory says fdinfo_per_id)`);
      fdinfoImage = `fdinfo-${u32(ids.files_id, idsName, 'files_id', 0)}.img`;
    }
    const optU32 = (v: unknown): number | undefined => (typeof v === 'number' && v > 0 ? v : undefined);
    processes.push({
      pid, ppid: u32(m.ppid, 'pstree.img', 'ppid', offset, U31), pgid: u32(m.pgid, 'pstree.img', 'pgid', offset, U31),
      sid: u32(m.sid, 'pstree.img', 'sid', offset, U31), threads, fdinfoImage,
      ...(comm !== undefined ? { comm } : {}),
      ...(ids && optU32(ids.mnt_ns_id) ? { mntNsId: ids.mnt_ns_id as number } : {}),
      ...(ids && optU32(ids.uts_ns_id) ? { utsNsId: ids.uts_ns_id as number } : {}),
    });
  }

  // fdinfo images (a shared fd table is read once)
  const fdTables = new Map<string, CriuFd[]>();
  const fds = new Map<number, readonly CriuFd[]>();
  for (const p of processes) {
    let table = fdTables.get(p.fdinfoImage);
    if (!table) {
      table = [];
      const seen = new Set<number>();
      for (const { offset, message } of decode(p.fdinfoImage, CRIU_MAGIC.FDINFO, 'FDINFO', CriuTypes.fdinfo)) {
        const m = message as Msg;
        const fd = u32(m.fd, p.fdinfoImage, 'fd', offset, U31);
        if (seen.has(fd)) invalid(p.fdinfoImage, `fd ${fd} appears twice`, offset);
        seen.add(fd);
        table.push({ fd, id: u32(m.id, p.fdinfoImage, 'file id', offset), cloexec: ((m.flags as number) & 1) !== 0, type: u32(m.type, p.fdinfoImage, 'type', offset) });
      }
      fdTables.set(p.fdinfoImage, table);
    }
    fds.set(p.pid, table);
  }

  // files.img (or reg-files.img, CRIU before 3.x)
  const files = new Map<number, CriuFile>();
  const regOf = (r: Msg, name: string, offset: number): CriuRegFile => {
    if (typeof r.name !== 'string') invalid(name, 'reg_file_entry without a name', offset);
    return {
      id: u32(r.id, name, 'reg_file_entry id', offset), flags: u32(r.flags, name, 'flags', offset), pos: fromLong(r.pos),
      name: r.name as string, mntId: typeof r.mnt_id === 'number' ? r.mnt_id : -1,
      ...(typeof r.mode === 'number' && Object.prototype.hasOwnProperty.call(r, 'mode') ? { mode: r.mode } : {}),
      ext: r.ext === true,
    };
  };
  if (src.has('files.img')) {
    for (const { offset, message } of decode('files.img', CRIU_MAGIC.FILES, 'FILES', CriuTypes.file)) {
      const m = message as Msg;
      const id = u32(m.id, 'files.img', 'file id', offset);
      if (id === 0) invalid('files.img', 'file id 0 (CRIU numbers files from 1)', offset);
      if (files.has(id)) invalid('files.img', `file id ${id} appears twice`, offset);
      const type = u32(m.type, 'files.img', 'type', offset);
      let reg: CriuRegFile | undefined;
      if (type === FD_TYPE.REG) {
        if (!m.reg) invalid('files.img', `REG file ${id} has no reg_file_entry`, offset);
        reg = regOf(m.reg as Msg, 'files.img', offset);
        if (reg.id !== id) invalid('files.img', `file_entry id ${id} holds reg_file_entry id ${reg.id}`, offset);
      }
      files.set(id, { id, type, ...(reg ? { reg } : {}) });
    }
  } else if (src.has('reg-files.img')) {
    for (const { offset, message } of decode('reg-files.img', CRIU_MAGIC.REG_FILES, 'REG_FILES', CriuTypes.regFile)) {
      const reg = regOf(message as Msg, 'reg-files.img', offset);
      if (files.has(reg.id)) invalid('reg-files.img', `file id ${reg.id} appears twice`, offset);
      files.set(reg.id, { id: reg.id, type: FD_TYPE.REG, reg });
    }
  } else {
    throw new ImageError('MISSING', src.label('files.img'), 'is missing: the open files of the dump cannot be read');
  }

  // filelocks.img
  let locks: CriuLock[] | null = null;
  if (src.has('filelocks.img')) {
    locks = [];
    for (const { offset, message } of decode('filelocks.img', CRIU_MAGIC.FILE_LOCKS, 'FILE_LOCKS', CriuTypes.fileLock)) {
      const m = message as Msg;
      let start: bigint;
      let len: bigint;
      try { start = fromLong(m.start); len = fromLong(m.len); } catch (err) { return invalid('filelocks.img', (err as Error).message, offset); }
      locks.push({
        flag: u32(m.flag, 'filelocks.img', 'flag', offset), type: u32(m.type, 'filelocks.img', 'type', offset),
        pid: m.pid as number, fd: m.fd as number, start, len, offset,
      });
    }
  }

  // remap-fpath.img
  const remaps = new Map<number, 'LINKED' | 'GHOST' | 'PROCFS' | 'UNKNOWN'>();
  if (src.has('remap-fpath.img')) {
    for (const { offset, message } of decode('remap-fpath.img', CRIU_MAGIC.REMAP_FPATH, 'REMAP_FPATH', CriuTypes.remap)) {
      const m = message as Msg;
      const t = Object.prototype.hasOwnProperty.call(m, 'remap_type') ? REMAP_TYPE[m.remap_type as number] ?? 'UNKNOWN' : 'LINKED';
      remaps.set(u32(m.orig_id, 'remap-fpath.img', 'orig_id', offset), t);
    }
  }

  // mountpoints-<ns>.img of every mount namespace the processes are in
  let mounts: Map<number, CriuMount> | null = null;
  for (const ns of new Set(processes.map((p) => p.mntNsId).filter((x): x is number => x !== undefined))) {
    const name = `mountpoints-${ns}.img`;
    if (!src.has(name)) continue;
    mounts ??= new Map();
    for (const { offset, message } of decode(name, CRIU_MAGIC.MNTS, 'MNTS', CriuTypes.mnt)) {
      const m = message as Msg;
      const mntId = u32(m.mnt_id, name, 'mnt_id', offset, U31);
      if (mounts.has(mntId)) invalid(name, `mnt_id ${mntId} appears twice`, offset);
      let mp = m.mountpoint as string;
      if (mp.startsWith('./')) mp = mp.slice(1); // older images keep CRIU's "./" form
      if (!mp.startsWith('/')) invalid(name, `mount ${mntId} has a relative mountpoint ${JSON.stringify(mp)}`, offset);
      mounts.set(mntId, {
        mntId, parentMntId: u32(m.parent_mnt_id, name, 'parent_mnt_id', offset), rootDev: u32(m.root_dev, name, 'root_dev', offset),
        fstype: u32(m.fstype, name, 'fstype', offset), root: m.root as string, mountpoint: mp, source: m.source as string,
        ...(typeof m.ext_key === 'string' && m.ext_key !== '' ? { extKey: m.ext_key } : {}),
        deleted: m.deleted === true, nsId: ns,
      });
    }
  }

  // utsns-<ns>.img: the host name, when the UTS namespace was dumped
  let hostname: string | undefined;
  const uts = processes[0]!.utsNsId;
  if (uts !== undefined && src.has(`utsns-${uts}.img`)) {
    const e = decode(`utsns-${uts}.img`, CRIU_MAGIC.UTSNS, 'UTSNS', CriuTypes.utsns);
    if (e.length >= 1) hostname = (e[0]!.message as Msg).nodename as string;
  }

  const writtenAt = src.mtime('inventory.img');
  return {
    imgVersion, label: (name: string) => src.label(name), processes, fds, files, locks, remaps, mounts,
    ...(hostname !== undefined ? { hostname } : {}), ...(writtenAt ? { writtenAt } : {}),
  };
}
