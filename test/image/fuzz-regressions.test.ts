/**
 * Regression tests for what the image fuzzer (test/fuzz/images.test.ts) caught in readCheckpoint,
 * one case each, built by hand so they stay readable. (Files that are not regular files have
 * their own tests in safe-read.test.ts.)
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ImageError, readCheckpoint, writeCheckpoint, type Checkpoint } from '../../src/image/index.js';
import { encodeFields, frame, lockFields } from '../fuzz/protowire.js';

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true }); });

function sample(): Checkpoint {
  return {
    formatVersion: 1, createdAt: '2026-11-26T23:00:00.000Z', method: 'fdinfo', source: { hostname: 'n', kernel: 'k', rootPid: 10 },
    processes: [{ pid: 10, ppid: 1, nsPid: 1, comm: 'db', cgroup: '/' }],
    files: [
      { id: 1, path: '/data/db', flags: 0o100002, pos: 0n, mntId: 30, dev: { major: 254, minor: 1 }, ino: 5n, mountPoint: '/data', relPath: 'db' },
      { id: 2, path: '/data/lock', flags: 0o100000, pos: 0n, mntId: 30, dev: { major: 254, minor: 1 }, ino: 6n, mountPoint: '/data', relPath: 'lock' },
    ],
    fds: [{ pid: 10, fd: 3, fileId: 1, cloexec: false }, { pid: 10, fd: 4, fileId: 2, cloexec: false }],
    locks: [{ kind: 'OFD', type: 'WRITE', start: 0n, end: 'EOF', pid: 10, fd: 3, fileId: 1 }],
    skipped: [],
  };
}

function written(c: Checkpoint = sample()): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-fuzzreg-'));
  dirs.push(d);
  writeCheckpoint(d, c);
  return d;
}

/** Rewrite an image and re-seal its checksum and size in the manifest. */
function tamper(dir: string, name: string, f: (b: Buffer) => Buffer, manifest: (m: Record<string, any>) => void = () => {}): void {
  const b = f(fs.readFileSync(path.join(dir, name)));
  fs.writeFileSync(path.join(dir, name), b);
  const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  m.images[name] = { ...m.images[name], sha256: createHash('sha256').update(b).digest('hex'), size: b.length };
  manifest(m);
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
}

function imageError(dir: string): ImageError {
  try { readCheckpoint(dir); } catch (e) { if (e instanceof ImageError) return e; throw e; }
  throw new Error('readCheckpoint accepted the checkpoint');
}

describe('readCheckpoint: findings of the image fuzzer', () => {
  it('a file no fd refers to is reported at the byte offset of its files.img entry (fuzz: INVALID without offset)', () => {
    const d = written();
    // drop fd 4 (the only fd on file 2): files.img still holds file 2
    tamper(d, 'fdinfo-10.img', (b) => b.subarray(0, 8 + 4 + b.readUInt32LE(8)), (m) => { m.counts.fds = 1; });
    const e = imageError(d);
    expect(e.code).toBe('INVALID');
    expect(e.file).toBe(path.join(d, 'files.img'));
    const files = fs.readFileSync(path.join(d, 'files.img'));
    const second = 8 + 4 + files.readUInt32LE(8); // offset of the second entry's length word
    expect(e.offset).toBe(second);
    expect(e.message).toBe(`${path.join(d, 'files.img')} at offset ${second}: file 2 ("/data/lock") is not referenced by any fd`);
  });

  it('open flags with bit 31 set read back as the same unsigned 32-bit value (fuzz: negative open flags)', () => {
    const c = sample();
    const odd = { ...c, files: [{ ...c.files[0]!, flags: 0x80000002 }, { ...c.files[1]!, flags: 0xfff7fffe }] };
    const d = written(odd);
    const back = readCheckpoint(d);
    expect(back.files.map((f) => f.flags)).toEqual([0x80000002, 0xfff7fffe]);
    expect(back.files.every((f) => f.flags >= 0)).toBe(true);
  });

  it('a lock whose range ends at 2^63-1 reads as EOF, the form the writer and the kernel use (fuzz: round trip changed the lock)', () => {
    const d = written();
    // CRIU encoding of an OFD write lock on fd 3 of pid 10: start 1, len 2^63-1 (ends at OFFSET_MAX)
    const entry = encodeFields(lockFields({ flag: 4n, type: 1n, pid: 10n, fd: 3n, start: 1n, len: (1n << 63n) - 1n }));
    tamper(d, 'filelocks.img', () => frame(0x54323616, [entry]));
    const c = readCheckpoint(d);
    expect(c.locks).toEqual([{ kind: 'OFD', type: 'WRITE', start: 1n, end: 'EOF', pid: 10, fd: 3, fileId: 1 }]);
    const again = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-fuzzreg-'));
    dirs.push(again);
    writeCheckpoint(again, c);
    expect(readCheckpoint(again)).toEqual(c);
  });
});
