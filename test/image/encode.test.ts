/**
 * The direct image encoders write exactly the bytes protobufjs writes for the same messages
 * (protobufjs is the reference: readCheckpoint decodes with it, and crit reads its output).
 */
import { describe, expect, it } from 'vitest';
import { encodeFdinfo, encodeFileLocks, encodeFiles, type LockEntry } from '../../src/image/encode.js';
import { encodeImage, decodeImage } from '../../src/image/criu.js';
import { FD_TYPE_REG, MAGIC, fromLong } from '../../src/image/proto.js';
import { FdinfoEntry, FileEntry, FileLockEntry, toLong } from '../../src/image/reference.js';

const P62 = 1n << 62n;
const I64MAX = (1n << 63n) - 1n;

/** A small deterministic generator, so a failure is reproducible. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
}

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)]!;
}

const big = (r: () => number): bigint => pick(r, [0n, 1n, 127n, 128n, 16383n, 16384n, 2n ** 31n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, P62, P62 + 7n, I64MAX - 1n, I64MAX, BigInt(Math.floor(r() * 2 ** 40))]);

describe('direct encoders', () => {
  it('file_lock_entry: byte-equal to protobufjs, including 64-bit edges and negative int32', () => {
    const r = rng(1);
    const entries: LockEntry[] = [];
    for (let i = 0; i < 500; i++) {
      entries.push({ flag: pick(r, [1, 2, 4, 8]), type: pick(r, [0, 1]), pid: pick(r, [1, 300, 4194304, -1, 0]), fd: pick(r, [0, 3, 127, 128, 1048575, -1]), start: big(r), len: big(r) });
    }
    const ours = encodeFileLocks(entries);
    const ref = encodeImage(MAGIC.FILE_LOCKS, FileLockEntry, entries.map((e) => ({ ...e, start: toLong(e.start, false), len: toLong(e.len, false) })));
    expect(ours.equals(ref)).toBe(true);
    // and decodes to the same values
    const back = decodeImage(ours, 'filelocks.img', MAGIC.FILE_LOCKS, 'FILE_LOCKS', FileLockEntry);
    expect(back.map((d) => fromLong(d.message.start))).toEqual(entries.map((e) => e.start));
  });

  it('the KERNEL-NOTES example (OFD write lock, whole file, pid 1, fd 3) byte for byte', () => {
    const b = encodeFileLocks([{ flag: 4, type: 1, pid: 1, fd: 3, start: 0n, len: 0n }]);
    expect(b.toString('hex')).toBe('1943565416363254' + '0c000000' + '080410011801200328003000');
  });

  it('file_entry with reg_file_entry: byte-equal to protobufjs for odd names, big offsets and mnt_id −1', () => {
    const r = rng(2);
    const names = ['/a', '/data/a b\nc.db', '/data/ü/日本語', `/${'x'.repeat(200)}`, `/${'y'.repeat(20000)}`, '/'];
    const files = Array.from({ length: 300 }, (_, i) => ({
      id: pick(r, [1, 127, 128, 100000, 0xffffffff]) + (i % 3), flags: pick(r, [0, 0o2, 0o100002, 0o2100002, 0xffffffff]),
      pos: big(r), path: pick(r, names), mntId: pick(r, [-1, 0, 27, 63, 64, 1 << 20, -(1 << 20)]),
    }));
    const ours = encodeFiles(files);
    const ref = encodeImage(MAGIC.FILES, FileEntry, files.map((f) => ({
      type: FD_TYPE_REG, id: f.id >>> 0,
      reg: { id: f.id >>> 0, flags: f.flags >>> 0, pos: toLong(f.pos, true), fown: { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 }, name: f.path, mnt_id: f.mntId },
    })));
    expect(ours.equals(ref)).toBe(true);
  });

  it('fdinfo_entry: byte-equal to protobufjs', () => {
    const r = rng(3);
    const fds = Array.from({ length: 300 }, () => ({ fileId: pick(r, [1, 2, 128, 70000]), cloexec: r() < 0.5, fd: pick(r, [0, 3, 127, 128, 65535, 1048575]) }));
    const ours = encodeFdinfo(fds);
    const ref = encodeImage(MAGIC.FDINFO, FdinfoEntry, fds.map((d) => ({ id: d.fileId, flags: d.cloexec ? 1 : 0, type: FD_TYPE_REG, fd: d.fd })));
    expect(ours.equals(ref)).toBe(true);
  });

  it('empty images are just the two magics', () => {
    expect(encodeFileLocks([]).toString('hex')).toBe('1943565416363254');
    expect(encodeFiles([]).length).toBe(8);
    expect(encodeFdinfo([]).length).toBe(8);
  });
});
