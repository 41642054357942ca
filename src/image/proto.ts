/**
 * The CRIU protobuf messages lockmig writes, declared here (no protoc step) with CRIU's
 * field numbers and types (images/file-lock.proto, regfile.proto, fown.proto, fdinfo.proto),
 * so `crit decode` reads our images. Only the fields lockmig fills are declared: protobuf
 * ignores unknown fields, and optional ones may be absent.
 *
 * Image magics (criu/include/magic.h): every image starts with IMG_COMMON then its own magic.
 */
import protobuf from 'protobufjs';

export const MAGIC = {
  IMG_COMMON: 0x54564319,
  FILE_LOCKS: 0x54323616,
  FILES: 0x56303138,
  FDINFO: 0x56213732,
} as const;

/** fd_types from images/fdinfo.proto (only REG is written). */
export const FD_TYPE_REG = 1;

const SCHEMA = `
syntax = "proto2";

message file_lock_entry {
  required uint32 flag  = 1;
  required uint32 type  = 2;
  required int32  pid   = 3;
  required int32  fd    = 4;
  required int64  start = 5;
  required int64  len   = 6;
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
  optional sint32     mnt_id = 7;
}

enum fd_types {
  UND = 0;
  REG = 1;
}

message file_entry {
  required fd_types       type = 1;
  required uint32         id   = 2;
  optional reg_file_entry reg  = 3;
}

message fdinfo_entry {
  required uint32   id    = 1;
  required uint32   flags = 2;
  required fd_types type  = 3;
  required uint32   fd    = 4;
}
`;

const root = protobuf.parse(SCHEMA, { keepCase: true }).root;

export const FileLockEntry = root.lookupType('file_lock_entry');
export const FileEntry = root.lookupType('file_entry');
export const FdinfoEntry = root.lookupType('fdinfo_entry');

/** bigint → protobufjs Long without passing through a JS number. */
export function toLong(v: bigint, unsigned: boolean): protobuf.Long {
  const L = protobuf.util.Long as unknown as { fromString(s: string, unsigned: boolean, radix: number): protobuf.Long } | undefined;
  if (!L) throw new Error('protobufjs was loaded without the "long" package: 64-bit values cannot be encoded exactly');
  return L.fromString(v.toString(), unsigned, 10);
}

/** protobufjs int64/uint64 value (Long, or number when small) → bigint, exactly. */
export function fromLong(v: unknown): bigint {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new Error(`64-bit value ${v} lost precision`);
    return BigInt(v);
  }
  if (typeof v === 'bigint') return v;
  if (v !== null && typeof v === 'object' && 'low' in v && 'high' in v) return BigInt((v as protobuf.Long).toString());
  throw new Error(`not a 64-bit integer: ${String(v)}`);
}
