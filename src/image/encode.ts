/**
 * Direct encoders for the three CRIU messages lockmig writes (file_lock_entry, file_entry with
 * reg_file_entry, fdinfo_entry), framed as CRIU images (criu.ts). They write the bytes
 * protobufjs' generic encoder writes for the same messages (proto.ts), without building a
 * message object, a Long and a Writer per entry: for a 2,000-lock dump that was 60 % of
 * writeCheckpoint's time. test/image/encode.test.ts holds them byte-equal to protobufjs, and
 * readCheckpoint decodes with protobufjs.
 *
 * Wire format (proto2, every declared field present, in field-number order): varint fields
 * use tag (n << 3 | 0); int32 values below zero are sign-extended to ten bytes; sint32 is
 * zigzag-encoded; strings and sub-messages use tag (n << 3 | 2), a varint length, the bytes.
 */
import { MAGIC, FD_TYPE_REG } from './proto.js';
import type { FdRecord, FileRecord } from './model.js';

/** A growable output buffer with the few writes the encoders need. */
class Out {
  buf: Buffer;
  len = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(Math.max(64, size));
  }

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  u32le(v: number): void {
    this.room(4);
    this.buf.writeUInt32LE(v >>> 0, this.len);
    this.len += 4;
  }

  byte(b: number): void {
    this.room(1);
    this.buf[this.len++] = b;
  }

  /** varint of a non-negative integer below 2^53 */
  varint(v: number): void {
    this.room(10);
    while (v >= 0x80) {
      this.buf[this.len++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.len++] = v;
  }

  /** varint of a 64-bit two's-complement value given as bigint (negative: ten bytes) */
  varint64(v: bigint): void {
    if (v >= 0n && v < 0x20000000000000n) { this.varint(Number(v)); return; }
    let u = BigInt.asUintN(64, v);
    this.room(10);
    while (u >= 0x80n) {
      this.buf[this.len++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    this.buf[this.len++] = Number(u);
  }

  /** int32 field value: negative numbers are sign-extended to 64 bits */
  int32(v: number): void {
    if (v >= 0) this.varint(v);
    else this.varint64(BigInt(v));
  }

  bytes(b: Buffer): void {
    this.room(b.length);
    b.copy(this.buf, this.len);
    this.len += b.length;
  }

  /** reserve a u32 length word; returns its offset for `endEntry` */
  beginEntry(): number {
    this.room(4);
    const at = this.len;
    this.len += 4;
    return at;
  }

  endEntry(at: number): void {
    this.buf.writeUInt32LE(this.len - at - 4, at);
  }

  done(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

function header(magic: number, size: number): Out {
  const o = new Out(size);
  o.u32le(MAGIC.IMG_COMMON);
  o.u32le(magic);
  return o;
}

const varintSize = (v: number): number => {
  let n = 1;
  while (v >= 0x80) { v = Math.floor(v / 0x80); n++; }
  return n;
};

const varint64Size = (v: bigint): number => {
  if (v >= 0n && v < 0x20000000000000n) return varintSize(Number(v));
  let u = BigInt.asUintN(64, v);
  let n = 1;
  while (u >= 0x80n) { u >>= 7n; n++; }
  return n;
};

/** One file_lock_entry per lock: flag, type, pid, fd, start, len (CRIU's numbers). */
export interface LockEntry {
  readonly flag: number;
  readonly type: number;
  readonly pid: number;
  readonly fd: number;
  readonly start: bigint;
  readonly len: bigint;
}

export function encodeFileLocks(entries: readonly LockEntry[]): Buffer {
  const o = header(MAGIC.FILE_LOCKS, 8 + entries.length * 24);
  for (const e of entries) {
    const at = o.beginEntry();
    o.byte(0x08); o.varint(e.flag >>> 0);
    o.byte(0x10); o.varint(e.type >>> 0);
    o.byte(0x18); o.int32(e.pid | 0);
    o.byte(0x20); o.int32(e.fd | 0);
    o.byte(0x28); o.varint64(e.start);
    o.byte(0x30); o.varint64(e.len);
    o.endEntry(at);
  }
  return o.done();
}

/** fown_entry with every field 0 (uid, euid, signum, pid_type, pid). */
const FOWN_ZERO = Buffer.from([0x08, 0, 0x10, 0, 0x18, 0, 0x20, 0, 0x28, 0]);

/** One file_entry{type REG, id, reg: reg_file_entry{id, flags, pos, fown, name, mnt_id}} per file. */
export function encodeFiles(files: readonly Pick<FileRecord, 'id' | 'flags' | 'pos' | 'path' | 'mntId'>[]): Buffer {
  const o = header(MAGIC.FILES, 8 + files.length * 64);
  for (const f of files) {
    const name = Buffer.from(f.path, 'utf8');
    const id = f.id >>> 0;
    const flags = f.flags >>> 0;
    const mnt = f.mntId | 0;
    const zz = ((mnt << 1) ^ (mnt >> 31)) >>> 0;
    // the reg_file_entry's length, to write it before its bytes
    const regLen = 1 + varintSize(id) + 1 + varintSize(flags) + 1 + varint64Size(f.pos) + 1 + 1 + FOWN_ZERO.length
      + 1 + varintSize(name.length) + name.length + 1 + varintSize(zz);
    const at = o.beginEntry();
    o.byte(0x08); o.varint(FD_TYPE_REG);
    o.byte(0x10); o.varint(id);
    o.byte(0x1a); o.varint(regLen);
    o.byte(0x08); o.varint(id);
    o.byte(0x10); o.varint(flags);
    o.byte(0x18); o.varint64(f.pos);
    o.byte(0x2a); o.varint(FOWN_ZERO.length); o.bytes(FOWN_ZERO);
    o.byte(0x32); o.varint(name.length); o.bytes(name);
    o.byte(0x38); o.varint(zz);
    o.endEntry(at);
  }
  return o.done();
}

/** One fdinfo_entry{id, flags (FD_CLOEXEC), type REG, fd} per fd. */
export function encodeFdinfo(fds: readonly Pick<FdRecord, 'fileId' | 'cloexec' | 'fd'>[]): Buffer {
  const o = header(MAGIC.FDINFO, 8 + fds.length * 16);
  for (const d of fds) {
    const at = o.beginEntry();
    o.byte(0x08); o.varint(d.fileId >>> 0);
    o.byte(0x10); o.varint(d.cloexec ? 1 : 0);
    o.byte(0x18); o.varint(FD_TYPE_REG);
    o.byte(0x20); o.varint(d.fd >>> 0);
    o.endEntry(at);
  }
  return o.done();
}
