/**
 * A raw protobuf wire writer for the fuzzers, written independently of protobufjs so it can
 * produce what a schema-driven encoder never would: out-of-range numbers, negative int32 as
 * 10-byte varints, overlong and over-10-byte varints, wrong wire types, unknown fields, groups,
 * duplicated and missing required fields. The CRIU framing (two little-endian magics, then u32
 * length + message per entry) is rebuilt here the same way.
 *
 * With well-formed inputs its output is byte-identical to writeCheckpoint's (checked in
 * test/fuzz/images.test.ts), so a mutation starts from exactly what lockmig writes.
 */

export const WT = { VARINT: 0, I64: 1, LEN: 2, SGROUP: 3, EGROUP: 4, I32: 5 } as const;
export type WireType = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7;

export type FieldValue = bigint | number | Buffer | string | Field[];
export interface Field {
  readonly num: number;
  readonly wt: WireType;
  readonly value: FieldValue;
  /** extra continuation bytes on a varint value (overlong encoding) */
  readonly pad?: number;
  /** emit `value` (a Buffer) verbatim, without a tag: for hand-made malformed bytes */
  readonly raw?: boolean;
}

/** LEB128 of a value taken modulo 2^64 (negative numbers become 10 bytes, as protobuf int32/int64 do). */
export function varint(v: bigint | number, pad = 0): Buffer {
  let x = BigInt(v);
  if (x < 0n) x &= (1n << 64n) - 1n;
  const out: number[] = [];
  do {
    const b = Number(x & 0x7fn);
    x >>= 7n;
    out.push(x > 0n ? b | 0x80 : b);
  } while (x > 0n);
  for (let i = 0; i < pad; i++) {
    out[out.length - 1]! |= 0x80;
    out.push(i === pad - 1 ? 0 : 0x80);
  }
  return Buffer.from(out);
}

/** A varint longer than protobuf allows (11+ bytes): every decoder must refuse it. */
export function overlongVarint(bytes: number): Buffer {
  const b = Buffer.alloc(bytes, 0xff);
  b[bytes - 1] = 0x01;
  return b;
}

export function zigzag32(n: number): number {
  return ((n << 1) ^ (n >> 31)) >>> 0;
}

export function encodeFields(fields: readonly Field[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of fields) {
    if (f.raw) {
      parts.push(f.value as Buffer);
      continue;
    }
    parts.push(varint((BigInt(f.num) << 3n) | BigInt(f.wt)));
    const v = f.value;
    switch (f.wt) {
      case WT.VARINT:
        parts.push(Buffer.isBuffer(v) ? v : varint(v as bigint | number, f.pad ?? 0));
        break;
      case WT.I64: {
        const b = Buffer.alloc(8);
        b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v as bigint | number)));
        parts.push(b);
        break;
      }
      case WT.I32: {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(Number(BigInt.asUintN(32, BigInt(v as bigint | number))));
        parts.push(b);
        break;
      }
      case WT.LEN: {
        const body = Array.isArray(v) ? encodeFields(v) : typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.isBuffer(v) ? v : varint(v);
        parts.push(varint(body.length), body);
        break;
      }
      case WT.SGROUP: {
        parts.push(Array.isArray(v) ? encodeFields(v) : Buffer.alloc(0));
        parts.push(varint((BigInt(f.num) << 3n) | BigInt(WT.EGROUP)));
        break;
      }
      default:
        // EGROUP without a start, or the reserved wire types 6 and 7: nothing follows the tag
        if (Buffer.isBuffer(v)) parts.push(v);
        break;
    }
  }
  return Buffer.concat(parts);
}

/** CRIU image: IMG_COMMON, the image magic, then u32le length + bytes per entry. */
export function frame(magic: number, entries: readonly Buffer[], common = 0x54564319): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32LE(common >>> 0, 0);
  head.writeUInt32LE(magic >>> 0, 4);
  const parts: Buffer[] = [head];
  for (const e of entries) {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(e.length, 0);
    parts.push(len, e);
  }
  return Buffer.concat(parts);
}

/** Entry boundaries of a framed image: 0 (start), 4, 8, then each entry's length word and body. */
export function boundaries(img: Buffer): number[] {
  const out = [0, 4, 8];
  let off = 8;
  while (off + 4 <= img.length) {
    const len = img.readUInt32LE(off);
    out.push(off, off + 1, off + 4);
    off += 4 + len;
    if (off <= img.length) out.push(off);
  }
  return [...new Set(out)].filter((x) => x <= img.length).sort((a, b) => a - b);
}

// ---- the CRIU messages lockmig uses, as plain field lists (numbers as in images/*.proto)

export interface RawLock { flag: bigint; type: bigint; pid: bigint; fd: bigint; start: bigint; len: bigint }
export interface RawReg { id: bigint; flags: bigint; pos: bigint; name: string | Buffer; mntId?: number }
export interface RawFile { type: bigint; id: bigint; reg?: RawReg }
export interface RawFdinfo { id: bigint; flags: bigint; type: bigint; fd: bigint }

export function lockFields(l: RawLock): Field[] {
  return [
    { num: 1, wt: WT.VARINT, value: l.flag }, { num: 2, wt: WT.VARINT, value: l.type },
    { num: 3, wt: WT.VARINT, value: l.pid }, { num: 4, wt: WT.VARINT, value: l.fd },
    { num: 5, wt: WT.VARINT, value: l.start }, { num: 6, wt: WT.VARINT, value: l.len },
  ];
}

export function regFields(r: RawReg): Field[] {
  const fown: Field[] = [1, 2, 3, 4, 5].map((num) => ({ num, wt: WT.VARINT, value: 0 }));
  return [
    { num: 1, wt: WT.VARINT, value: r.id }, { num: 2, wt: WT.VARINT, value: r.flags }, { num: 3, wt: WT.VARINT, value: r.pos },
    { num: 5, wt: WT.LEN, value: fown }, { num: 6, wt: WT.LEN, value: typeof r.name === 'string' ? Buffer.from(r.name, 'utf8') : r.name },
    ...(r.mntId !== undefined ? [{ num: 7, wt: WT.VARINT, value: zigzag32(r.mntId) } as Field] : []),
  ];
}

export function fileFields(f: RawFile): Field[] {
  return [
    { num: 1, wt: WT.VARINT, value: f.type }, { num: 2, wt: WT.VARINT, value: f.id },
    ...(f.reg ? [{ num: 3, wt: WT.LEN, value: regFields(f.reg) } as Field] : []),
  ];
}

export function fdinfoFields(d: RawFdinfo): Field[] {
  return [
    { num: 1, wt: WT.VARINT, value: d.id }, { num: 2, wt: WT.VARINT, value: d.flags },
    { num: 3, wt: WT.VARINT, value: d.type }, { num: 4, wt: WT.VARINT, value: d.fd },
  ];
}
