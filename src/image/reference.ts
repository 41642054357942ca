/**
 * The CRIU messages of proto.ts declared for protobufjs: the reference implementation the
 * direct encoders and decoders (encode.ts, decode.ts) are tested against byte for byte, and a
 * readable statement of the schema. Nothing at run time imports this module (protobufjs costs
 * the restore shim 60–90 ms of start-up), so it is kept out of the bundled commands.
 */
import protobuf from 'protobufjs';

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
