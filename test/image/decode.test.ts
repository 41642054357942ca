/**
 * The direct decoders read what protobufjs (the reference) reads: the same values for every
 * image lockmig writes, for entries carrying fields CRIU writes and lockmig does not know, and
 * for every mutated entry they accept. Where they are stricter than protobufjs (wrong wire type,
 * a length past the end, a missing required field) they fail with a clear error.
 */
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { FileEntry, FileLockEntry, FdinfoEntry, DecodeError, type MessageType } from '../../src/image/decode.js';
import * as ref from '../../src/image/reference.js';
import { encodeFdinfo, encodeFileLocks, encodeFiles } from '../../src/image/encode.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
}
const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const big = (r: () => number): bigint => pick(r, [0n, 1n, 127n, 128n, 2n ** 32n, 2n ** 53n + 1n, 1n << 62n, (1n << 63n) - 1n, BigInt(Math.floor(r() * 2 ** 40))]);

/** protobufjs' decoded message as plain values (Long → bigint, nested messages recursively). */
function plain(v: unknown): unknown {
  if (v === null || typeof v !== 'object') return v;
  if ('low' in v && 'high' in v && 'unsigned' in v) {
    const l = v as { low: number; high: number; unsigned: boolean };
    const u = (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0);
    return l.unsigned ? u : BigInt.asIntN(64, u);
  }
  const out: Record<string, unknown> = {};
  // protobufjs keeps defaults on the prototype: read every declared field
  const t = (v as { $type?: protobuf.Type }).$type;
  const names = t ? Object.keys(t.fields) : Object.keys(v);
  for (const k of names) out[k] = plain((v as Record<string, unknown>)[k]);
  return out;
}

/** Entries of an image (after the 8-byte header). */
function entries(img: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 8; off < img.length;) {
    const len = img.readUInt32LE(off);
    out.push(img.subarray(off + 4, off + 4 + len));
    off += 4 + len;
  }
  return out;
}

function same(ours: MessageType, theirs: protobuf.Type, bytes: Buffer): void {
  expect(ours.decode(bytes)).toEqual(plain(theirs.decode(bytes)));
}

describe('direct decoders against protobufjs', () => {
  const r = rng(7);
  const locks = encodeFileLocks(Array.from({ length: 200 }, () => ({
    flag: pick(r, [1, 2, 4, 8]), type: pick(r, [0, 1]), pid: pick(r, [1, 4194304, -1]), fd: pick(r, [3, 1048575, -1]), start: big(r), len: big(r),
  })));
  const files = encodeFiles(Array.from({ length: 200 }, (_, i) => ({
    id: i + 1, flags: pick(r, [0, 0o2, 0o2100002, 0xffffffff]), pos: big(r), path: pick(r, ['/a', '/data/a b\nc', '/ü/日本', `/${'x'.repeat(300)}`]), mntId: pick(r, [-1, 0, 27, 1 << 20]),
  })));
  const fdinfo = encodeFdinfo(Array.from({ length: 200 }, (_, i) => ({ fileId: i + 1, cloexec: r() < 0.5, fd: pick(r, [0, 3, 128, 1048575]) })));

  it('decodes every entry lockmig writes exactly as protobufjs does', () => {
    for (const e of entries(locks)) same(FileLockEntry, ref.FileLockEntry, e);
    for (const e of entries(files)) same(FileEntry, ref.FileEntry, e);
    for (const e of entries(fdinfo)) same(FdinfoEntry, ref.FdinfoEntry, e);
  });

  it('skips the fields CRIU writes that lockmig does not declare (reg_file_entry size, mode, ext…), in any order', () => {
    // CRIU's regfile.proto has more fields; an image written by CRIU carries them
    const criu = protobuf.parse(`syntax = "proto2";
      message fown_entry { required uint32 uid = 1; required uint32 euid = 2; required uint32 signum = 3; required uint32 pid_type = 4; required uint32 pid = 5; }
      message reg_file_entry { required uint32 id = 1; required uint32 flags = 2; required uint64 pos = 3; required fown_entry fown = 5; required string name = 6;
        optional sint32 mnt_id = 7; optional uint64 size = 8; optional bool ext = 9; optional uint32 mode = 10; repeated bytes build_id = 11; optional fixed32 crc = 12; optional double d = 13; }
      message file_entry { required int32 type = 1; required uint32 id = 2; optional reg_file_entry reg = 3; optional bytes other = 20; }`, { keepCase: true }).root;
    const FE = criu.lookupType('file_entry');
    for (let i = 0; i < 50; i++) {
      const msg = FE.fromObject({
        type: 1, id: i + 1, other: Buffer.from('xyz'),
        reg: { id: i + 1, flags: 0o100002, pos: 12345, fown: { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 }, name: `/data/f${i}`, mnt_id: 31, size: 4096, ext: true, mode: 0o100644, build_id: [Buffer.from([1, 2])], crc: 7, d: 1.5 },
      });
      const bytes = Buffer.from(FE.encode(msg).finish());
      same(FileEntry, ref.FileEntry, bytes);
    }
  });

  it('every mutated entry it accepts decodes to what protobufjs decodes', () => {
    const rr = rng(11);
    let accepted = 0;
    let rejected = 0;
    const pairs: [MessageType, protobuf.Type, Buffer[]][] = [
      [FileLockEntry, ref.FileLockEntry, entries(locks)], [FileEntry, ref.FileEntry, entries(files)], [FdinfoEntry, ref.FdinfoEntry, entries(fdinfo)],
    ];
    for (let n = 0; n < 3000; n++) {
      const [ours, theirs, list] = pick(rr, pairs);
      const b = Buffer.from(pick(rr, list));
      const k = Math.floor(rr() * 3);
      let m: Buffer = b;
      if (k === 0) b[Math.floor(rr() * b.length)] = Math.floor(rr() * 256);
      else if (k === 1) m = b.subarray(0, Math.floor(rr() * b.length));
      else m = Buffer.concat([b, Buffer.from([Math.floor(rr() * 256), Math.floor(rr() * 256)])]);
      let got: unknown;
      try {
        got = ours.decode(m);
      } catch (err) {
        expect(err).toBeInstanceOf(DecodeError);
        rejected++;
        continue;
      }
      accepted++;
      expect(got).toEqual(plain(theirs.decode(m)));
    }
    expect(accepted).toBeGreaterThan(100);
    expect(rejected).toBeGreaterThan(100);
  });

  it('refuses what protobufjs would misread: wrong wire type, a length past the end, a missing required field, an invalid wire type', () => {
    // flag (field 1) sent length-delimited
    expect(() => FileLockEntry.decode(Buffer.from([0x0a, 0x01, 0x00]))).toThrow(/wire type 2, expected 0/);
    // name (field 6 of reg) claims 10 bytes, has 2
    expect(() => FileEntry.decode(Buffer.from([0x08, 0x01, 0x10, 0x01, 0x1a, 0x04, 0x32, 0x0a, 0x41, 0x42]))).toThrow(/runs past the end/);
    // a valid entry without its fd field
    const full = entries(fdinfo)[0]!;
    const noFd = full.subarray(0, full.lastIndexOf(0x20));
    expect(() => FdinfoEntry.decode(noFd)).toThrow(/missing required field 'fd'/);
    // wire type 3 (a group)
    expect(() => FdinfoEntry.decode(Buffer.from([0x7b]))).toThrow(/invalid wire type 3/);
    // a varint that never ends
    expect(() => FdinfoEntry.decode(Buffer.from([0x08, 0xff, 0xff]))).toThrow(/varint runs past the end/);
  });
});
