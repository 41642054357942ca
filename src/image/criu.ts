/**
 * CRIU's image framing (criu/include/image.h, lib/pycriu/images/images.py): u32 IMG_COMMON,
 * u32 image magic (both little-endian), then for each entry a u32 little-endian length and
 * that many bytes of protobuf. lockmig's images carry no extra payload after entries.
 */
import type protobuf from 'protobufjs';
import { ImageError } from './errors.js';
import { MAGIC } from './proto.js';

export function encodeImage(magic: number, type: protobuf.Type, entries: readonly object[]): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(8);
  head.writeUInt32LE(MAGIC.IMG_COMMON, 0);
  head.writeUInt32LE(magic, 4);
  parts.push(head);
  for (const e of entries) {
    // Entries are built by checkpoint.ts with the declared field types (numbers, Longs,
    // strings), so they are encoded directly; readCheckpoint's round-trip tests guard this.
    const body = type.encode(e).finish();
    const len = Buffer.alloc(4);
    len.writeUInt32LE(body.length, 0);
    parts.push(len, Buffer.from(body.buffer, body.byteOffset, body.length));
  }
  return Buffer.concat(parts);
}

export interface DecodedEntry {
  /** byte offset of the entry's length word */
  readonly offset: number;
  readonly message: Record<string, unknown>;
}

/** Largest single entry accepted; our entries are tens of bytes, paths at most PATH_MAX. */
const MAX_ENTRY = 1 << 20;

/**
 * Framing variants of images CRIU itself writes (read by src/image/criu/): `headless` for
 * inventory.img, which starts with its own magic and no IMG_COMMON; `maxEntries` bounds how
 * many messages one image may hold (a hostile image of 4-byte entries would otherwise decode
 * into millions of objects).
 */
export interface DecodeOptions {
  readonly headless?: boolean;
  readonly maxEntries?: number;
}

/** What decodeImage decodes entries with: a direct decoder (decode.ts) or a protobufjs Type (CRIU import, tests). */
export interface EntryDecoder {
  readonly name: string;
  decode(bytes: Buffer): unknown;
}

export function decodeImage(buf: Buffer, file: string, magic: number, magicName: string, type: EntryDecoder, opts: DecodeOptions = {}): DecodedEntry[] {
  const head = opts.headless ? 4 : 8;
  if (buf.length < head) throw new ImageError('TRUNCATED', file, `only ${buf.length} bytes, shorter than the ${head}-byte CRIU header`, 0);
  const m0 = buf.readUInt32LE(0);
  if (opts.headless) {
    if (m0 !== magic) throw new ImageError('BAD_MAGIC', file, `not a CRIU ${magicName} image: magic 0x${m0.toString(16)} (expected 0x${magic.toString(16)})`, 0);
  } else {
    const m1 = buf.readUInt32LE(4);
    if (m0 !== MAGIC.IMG_COMMON) {
      throw new ImageError('BAD_MAGIC', file, `not a CRIU image: first magic 0x${m0.toString(16)} (expected IMG_COMMON 0x${MAGIC.IMG_COMMON.toString(16)})`, 0);
    }
    if (m1 !== magic) {
      throw new ImageError('BAD_MAGIC', file, `wrong image type: magic 0x${m1.toString(16)} (expected ${magicName} 0x${magic.toString(16)})`, 4);
    }
  }
  const out: DecodedEntry[] = [];
  let off = head;
  while (off < buf.length) {
    if (opts.maxEntries !== undefined && out.length >= opts.maxEntries) {
      throw new ImageError('INVALID', file, `more than ${opts.maxEntries} entries`, off);
    }
    if (off + 4 > buf.length) throw new ImageError('TRUNCATED', file, `entry length cut short (${buf.length - off} of 4 bytes)`, off);
    const len = buf.readUInt32LE(off);
    if (len > MAX_ENTRY) throw new ImageError('INVALID', file, `entry length ${len} is implausible`, off);
    if (off + 4 + len > buf.length) {
      throw new ImageError('TRUNCATED', file, `entry of ${len} bytes but only ${buf.length - off - 4} remain`, off);
    }
    let message: Record<string, unknown>;
    try {
      message = type.decode(buf.subarray(off + 4, off + 4 + len)) as Record<string, unknown>;
    } catch (err) {
      throw new ImageError('INVALID', file, `undecodable ${type.name}: ${(err as Error).message}`, off, { cause: err });
    }
    out.push({ offset: off, message });
    off += 4 + len;
  }
  return out;
}
