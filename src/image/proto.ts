/**
 * The CRIU protobuf messages lockmig writes, declared here (no protoc step) with CRIU's
 * field numbers and types (images/file-lock.proto, regfile.proto, fown.proto, fdinfo.proto),
 * so `crit decode` reads our images. Only the fields lockmig fills are declared: protobuf
 * ignores unknown fields, and optional ones may be absent.
 *
 * Image magics (criu/include/magic.h): every image starts with IMG_COMMON then its own magic.
 */

export const MAGIC = {
  IMG_COMMON: 0x54564319,
  FILE_LOCKS: 0x54323616,
  FILES: 0x56303138,
  FDINFO: 0x56213732,
} as const;

/** fd_types from images/fdinfo.proto (only REG is written). */
export const FD_TYPE_REG = 1;

/**
 * The three message types readCheckpoint decodes, with direct decoders (decode.ts). The same
 * schema for protobufjs, the reference the tests compare with, is in reference.ts.
 */
export { FileLockEntry, FileEntry, FdinfoEntry, type MessageType } from './decode.js';

/** A decoded int64/uint64 value (bigint; or a protobufjs Long, or a number when small) → bigint, exactly. */
export function fromLong(v: unknown): bigint {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new Error(`64-bit value ${v} lost precision`);
    return BigInt(v);
  }
  if (typeof v === 'bigint') return v;
  if (v !== null && typeof v === 'object' && 'low' in v && 'high' in v) {
    // from the two 32-bit halves (Long#toString divides digit by digit: 6,000 of them were most
    // of reading a 2,000-lock checkpoint)
    const l = v as { low: number; high: number; unsigned: boolean };
    const u = (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0);
    return l.unsigned ? u : BigInt.asIntN(64, u);
  }
  throw new Error(`not a 64-bit integer: ${String(v)}`);
}
