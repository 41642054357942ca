/**
 * The CRIU image messages lockmig reads from (and writes into) a CRIU image directory,
 * declared with CRIU's own field numbers, types and `required` markers (checkpoint-restore/criu
 * images/*.proto at v4.2: inventory, pstree, core, fdinfo, regfile, fown, file-lock, mnt,
 * remap-file-path, utsns). Only the fields lockmig uses are declared: protobuf skips unknown
 * fields, so the much larger real messages (core_entry with registers, file_entry with sockets)
 * decode into what is declared here.
 *
 * This module is loaded only for CRIU input or `export-criu` (never by the restore shim reading
 * a lockmig directory): parsing a schema costs start-up time. src/image/proto.ts keeps the
 * few messages lockmig's own directory uses.
 */
import protobuf from 'protobufjs';

/** criu/include/magic.h: every image starts with IMG_COMMON (or IMG_SERVICE) then its own magic. */
export const CRIU_MAGIC = {
  IMG_COMMON: 0x54564319,
  IMG_SERVICE: 0x55105940,
  INVENTORY: 0x58313116,
  PSTREE: 0x50273030,
  FDINFO: 0x56213732,
  CORE: 0x55053847,
  IDS: 0x54432030,
  UTSNS: 0x54473203,
  REG_FILES: 0x50363636,
  REMAP_FPATH: 0x59133954,
  MNTS: 0x55563928,
  FILE_LOCKS: 0x54323616,
  FILES: 0x56303138,
} as const;

/** CRIU_IMAGES_V1_1 (criu/include/image.h): the only inventory img_version CRIU ≥ 1.x writes and reads. */
export const CRIU_IMG_VERSION = 2;

/** images/fdinfo.proto fd_types, for reporting what an fd is. */
export const FD_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: 'UND', 1: 'REG', 2: 'PIPE', 3: 'FIFO', 4: 'INETSK', 5: 'UNIXSK', 6: 'EVENTFD', 7: 'EVENTPOLL', 8: 'INOTIFY',
  9: 'SIGNALFD', 10: 'PACKETSK', 11: 'TTY', 12: 'FANOTIFY', 13: 'NETLINKSK', 14: 'NS', 15: 'TUNF', 16: 'EXT',
  17: 'TIMERFD', 18: 'MEMFD', 19: 'BPFMAP', 20: 'PIDFD',
};
export const FD_TYPE = { REG: 1 } as const;

/** core_entry.march UNKNOWN, and task_core_entry.task_state TASK_ALIVE (criu/include/task-state.h). */
export const MARCH_UNKNOWN = 0;
export const TASK_ALIVE = 1;

const SCHEMA = `
syntax = "proto2";

message task_kobj_ids_entry {
  required uint32 vm_id        = 1;
  required uint32 files_id     = 2;
  required uint32 fs_id        = 3;
  required uint32 sighand_id   = 4;
  optional uint32 pid_ns_id    = 5;
  optional uint32 net_ns_id    = 6;
  optional uint32 ipc_ns_id    = 7;
  optional uint32 uts_ns_id    = 8;
  optional uint32 mnt_ns_id    = 9;
  optional uint32 user_ns_id   = 10;
  optional uint32 cgroup_ns_id = 11;
  optional uint32 time_ns_id   = 12;
}

enum lsmtype {
  NO_LSM   = 0;
  SELINUX  = 1;
  APPARMOR = 2;
}

message inventory_entry {
  required uint32              img_version      = 1;
  optional bool                fdinfo_per_id    = 2;
  optional task_kobj_ids_entry root_ids         = 3;
  optional bool                ns_per_id        = 4;
  optional uint32              root_cg_set      = 5;
  optional lsmtype             lsmtype          = 6;
  optional uint64              dump_uptime      = 8;
  optional string              dump_criu_run_id = 13;
}

message pstree_entry {
  required uint32 pid     = 1;
  required uint32 ppid    = 2;
  required uint32 pgid    = 3;
  required uint32 sid     = 4;
  repeated uint32 threads = 5;
}

message task_core_entry {
  required uint32 task_state  = 1;
  required uint32 exit_code   = 2;
  required uint32 personality = 3;
  required uint32 flags       = 4;
  required uint64 blk_sigset  = 5;
  required string comm        = 6;
}

message core_entry {
  required uint32              mtype = 1;
  optional task_core_entry     tc    = 3;
  optional task_kobj_ids_entry ids   = 4;
}

message fown_entry {
  required uint32 uid      = 1;
  required uint32 euid     = 2;
  required uint32 signum   = 3;
  required uint32 pid_type = 4;
  required uint32 pid      = 5;
}

message reg_file_entry {
  required uint32     id     = 1;
  required uint32     flags  = 2;
  required uint64     pos    = 3;
  required fown_entry fown   = 5;
  required string     name   = 6;
  optional sint32     mnt_id = 7 [default = -1];
  optional uint64     size   = 8;
  optional bool       ext    = 9;
  optional uint32     mode   = 10;
}

message file_entry {
  required uint32         type = 1;
  required uint32         id   = 2;
  optional reg_file_entry reg  = 3;
}

message fdinfo_entry {
  required uint32 id    = 1;
  required uint32 flags = 2;
  required uint32 type  = 3;
  required uint32 fd    = 4;
}

message file_lock_entry {
  required uint32 flag  = 1;
  required uint32 type  = 2;
  required int32  pid   = 3;
  required int32  fd    = 4;
  required int64  start = 5;
  required int64  len   = 6;
}

message mnt_entry {
  required uint32 fstype        = 1;
  required uint32 mnt_id        = 2;
  required uint32 root_dev      = 3;
  required uint32 parent_mnt_id = 4;
  required uint32 flags         = 5;
  required string root          = 6;
  required string mountpoint    = 7;
  required string source        = 8;
  required string options       = 9;
  optional bool   ext_mount     = 13;
  optional string fsname        = 14;
  optional bool   deleted       = 16;
  optional string ext_key       = 18;
}

message remap_file_path_entry {
  required uint32 orig_id    = 1;
  required uint32 remap_id   = 2;
  optional uint32 remap_type = 3;
}

message utsns_entry {
  required string nodename   = 1;
  required string domainname = 2;
}
`;

const root = protobuf.parse(SCHEMA, { keepCase: true }).root;
const t = (name: string): protobuf.Type => root.lookupType(name);

export const CriuTypes = {
  inventory: t('inventory_entry'),
  pstree: t('pstree_entry'),
  core: t('core_entry'),
  ids: t('task_kobj_ids_entry'),
  file: t('file_entry'),
  regFile: t('reg_file_entry'),
  fdinfo: t('fdinfo_entry'),
  fileLock: t('file_lock_entry'),
  mnt: t('mnt_entry'),
  remap: t('remap_file_path_entry'),
  utsns: t('utsns_entry'),
} as const;

/** remap_type (images/remap-file-path.proto) */
export const REMAP_TYPE: Readonly<Record<number, 'LINKED' | 'GHOST' | 'PROCFS'>> = { 0: 'LINKED', 1: 'GHOST', 2: 'PROCFS' };

/** CRIU keeps devices in the kernel's internal encoding (MKKDEV: major << 20 | minor). */
export function kdevSplit(kdev: number): { major: number; minor: number } {
  return { major: kdev >>> 20, minor: kdev & 0xfffff };
}
export function kdevMake(major: number, minor: number): number {
  return ((major << 20) | (minor & 0xfffff)) >>> 0;
}
