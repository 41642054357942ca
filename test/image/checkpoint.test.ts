/**
 * Checkpoint images: exact CRIU bytes, bit-exact 64-bit round trips, and a clear ImageError
 * (never a crash, never a partial result) for every kind of damage.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ImageError, readCheckpoint, writeCheckpoint, type Checkpoint } from '../../src/image/index.js';
import { missing } from '../helpers/env.js';

const dirs: string[] = [];
const tmp = () => { const d = mkdtempSync(path.join(tmpdir(), 'lockmig-img-')); dirs.push(d); return d; };
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

const P62 = 1n << 62n;

function sample(): Checkpoint {
  return {
    formatVersion: 1, createdAt: '2026-11-26T23:00:00.000Z', method: 'fdinfo',
    source: { hostname: 'node-a', kernel: '6.18.44', rootPid: 100, pod: { namespace: 'ns', name: 'db-0', uid: 'u-1', containers: ['db'] } },
    processes: [
      { pid: 100, ppid: 1, nsPid: 1, comm: 'db', cgroup: '/kubepods/x' },
      { pid: 101, ppid: 100, nsPid: 2, comm: 'worker', cgroup: '/kubepods/x' },
    ],
    files: [
      { id: 1, path: '/data/a b\nc.db', flags: 0o100002, pos: P62 + 7n, mntId: 31, dev: { major: 254, minor: 1 }, ino: (1n << 60n) + 3n, mountPoint: '/data', relPath: 'a b\nc.db' },
      { id: 2, path: '/data/lock', flags: 0o100000, pos: 0n, mntId: 31, dev: { major: 254, minor: 1 }, ino: 12n, mountPoint: '/data', relPath: 'lock' },
    ],
    fds: [
      { pid: 100, fd: 3, fileId: 1, cloexec: false },
      { pid: 100, fd: 4, fileId: 2, cloexec: true },
      { pid: 101, fd: 3, fileId: 1, cloexec: false },
    ],
    locks: [
      { kind: 'OFD', type: 'WRITE', start: P62, end: P62 + P62 - 2n, pid: 100, fd: 3, fileId: 1 },
      { kind: 'POSIX', type: 'READ', start: 0n, end: 'EOF', pid: 101, fd: 3, fileId: 1 },
      { kind: 'FLOCK', type: 'READ', start: 0n, end: 'EOF', pid: 100, fd: 4, fileId: 2 },
      { kind: 'POSIX', type: 'WRITE', start: 9223372036854775806n, end: 9223372036854775806n, pid: 100, fd: 3, fileId: 1 },
    ],
    skipped: [{ pid: 101, fd: 9, target: '/data/x (deleted)', reason: 'deleted', message: 'unlinked', locked: true }],
  };
}

/** Rewrite an image and fix up its checksum and size in the manifest, to reach the decoder. */
function tamper(dir: string, name: string, f: (b: Buffer) => Buffer): void {
  const b = f(readFileSync(path.join(dir, name)));
  writeFileSync(path.join(dir, name), b);
  const m = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  m.images[name] = { ...m.images[name], sha256: createHash('sha256').update(b).digest('hex'), size: b.length };
  writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
}
function editManifest(dir: string, f: (m: Record<string, any>) => void): void {
  const m = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  f(m);
  writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
}
function imageError(dir: string): ImageError {
  try { readCheckpoint(dir); } catch (e) { if (e instanceof ImageError) return e; throw e; }
  throw new Error('readCheckpoint accepted a damaged checkpoint');
}

describe('writeCheckpoint / readCheckpoint', () => {
  it('round-trips the whole model, 64-bit values bit for bit', () => {
    const d = tmp();
    writeCheckpoint(d, sample());
    expect(readCheckpoint(d)).toEqual(sample());
    expect(readdirSync(d).sort()).toEqual(['fdinfo-100.img', 'fdinfo-101.img', 'filelocks.img', 'files.img', 'manifest.json']);
  });

  it('writes filelocks.img exactly as CRIU does (KERNEL-NOTES example)', () => {
    const d = tmp();
    const c = sample();
    writeCheckpoint(d, {
      ...c, processes: [{ ...c.processes[0]!, pid: 1 }], fds: [{ pid: 1, fd: 3, fileId: 1, cloexec: false }], files: [c.files[0]!],
      locks: [{ kind: 'OFD', type: 'WRITE', start: 0n, end: 'EOF', pid: 1, fd: 3, fileId: 1 }],
    });
    expect(readFileSync(path.join(d, 'filelocks.img')).toString('hex'))
      .toBe('19435654163632540c00000008041001180120032800' + '3000');
  });

  it('encodes 2^62 start and length as CRIU int64 varints', () => {
    const d = tmp();
    writeCheckpoint(d, sample());
    const b = readFileSync(path.join(d, 'filelocks.img'));
    // first entry: start 2^62 → varint 80 80 80 80 80 80 80 80 40 ; len 2^62-1 → ff×8 3f
    expect(b.toString('hex')).toContain('28808080808080808040' + '30ffffffffffffffff3f');
  });

  it('replaces an older checkpoint in the same directory', () => {
    const d = tmp();
    writeCheckpoint(d, sample());
    const c = {
      ...sample(), processes: sample().processes.slice(0, 1), fds: sample().fds.slice(0, 2), locks: sample().locks.filter((l) => l.pid === 100),
    };
    writeCheckpoint(d, c);
    expect(readCheckpoint(d)).toEqual(c);
    expect(readdirSync(d)).not.toContain('fdinfo-101.img');
    expect(readdirSync(d).some((n) => n.includes('.tmp'))).toBe(false);
  });

  it('refuses to write an inconsistent model', () => {
    const c = sample();
    expect(() => writeCheckpoint(tmp(), { ...c, locks: [{ ...c.locks[0]!, fd: 77 }] })).toThrow(/no such fd/);
    expect(() => writeCheckpoint(tmp(), { ...c, fds: [...c.fds, { pid: 555, fd: 1, fileId: 1, cloexec: false }] })).toThrow(/not among the processes/);
  });
});

describe('damaged checkpoints give a clear ImageError', () => {
  const written = () => { const d = tmp(); writeCheckpoint(d, sample()); return d; };

  it('missing directory or manifest → MISSING', () => {
    expect(imageError(path.join(tmpdir(), 'lockmig-does-not-exist')).code).toBe('MISSING');
    const d = written();
    rmSync(path.join(d, 'manifest.json'));
    const e = imageError(d);
    expect(e.code).toBe('MISSING');
    expect(e.message).toContain('manifest.json');
  });

  it('missing image → MISSING naming it', () => {
    const d = written();
    rmSync(path.join(d, 'fdinfo-101.img'));
    const e = imageError(d);
    expect(e.code).toBe('MISSING');
    expect(e.message).toContain('fdinfo-101.img');
  });

  it('truncated image → TRUNCATED with file and offset', () => {
    const d = written();
    truncateSync(path.join(d, 'filelocks.img'), 30);
    const e = imageError(d);
    expect(e.code).toBe('TRUNCATED');
    expect(e.message).toMatch(/filelocks\.img at offset 30/);
  });

  it('truncated manifest → TRUNCATED', () => {
    const d = written();
    truncateSync(path.join(d, 'manifest.json'), 100);
    expect(imageError(d).code).toBe('TRUNCATED');
  });

  it('a flipped byte → CHECKSUM', () => {
    const d = written();
    const p = path.join(d, 'files.img');
    const b = readFileSync(p);
    b[20] ^= 0x01;
    writeFileSync(p, b);
    const e = imageError(d);
    expect(e.code).toBe('CHECKSUM');
    expect(e.message).toContain('files.img');
  });

  it('foreign image magic → BAD_MAGIC with offset', () => {
    const d = written();
    tamper(d, 'filelocks.img', (b) => { const c = Buffer.from(b); c.writeUInt32LE(0x56303138, 4); return c; });
    const e = imageError(d);
    expect(e.code).toBe('BAD_MAGIC');
    expect(e.message).toMatch(/filelocks\.img at offset 4: wrong image type/);
    tamper(d, 'filelocks.img', () => Buffer.from('{"not":"criu"}'));
    expect(imageError(d).code).toBe('BAD_MAGIC');
  });

  it('entry cut short (consistent checksum) → TRUNCATED at the entry', () => {
    const d = written();
    tamper(d, 'filelocks.img', (b) => b.subarray(0, b.length - 3));
    const e = imageError(d);
    expect(e.code).toBe('TRUNCATED');
    expect(e.offset).toBeGreaterThanOrEqual(8);
  });

  it('garbage protobuf → INVALID naming the message', () => {
    const d = written();
    tamper(d, 'filelocks.img', (b) => Buffer.concat([b.subarray(0, 8), Buffer.from([3, 0, 0, 0, 0xff, 0xff, 0xff])]));
    const e = imageError(d);
    expect(e.code).toBe('INVALID');
    expect(e.message).toMatch(/filelocks\.img at offset 8: undecodable file_lock_entry/);
  });

  it('lock on an unknown fd → INVALID', () => {
    const d = written();
    tamper(d, 'fdinfo-101.img', (b) => b.subarray(0, 8));
    editManifest(d, (m) => { m.counts.fds = 2; });
    const e = imageError(d);
    expect(e.code).toBe('INVALID');
    expect(e.message).toMatch(/no such fd/);
  });

  it('other format or version → INVALID / VERSION', () => {
    const d = written();
    editManifest(d, (m) => { m.formatVersion = 99; });
    const e = imageError(d);
    expect(e.code).toBe('VERSION');
    expect(e.message).toContain('99');
    editManifest(d, (m) => { m.format = 'criu'; });
    expect(imageError(d).message).toMatch(/not a lockmig checkpoint/);
  });

  it('manifest fields are validated with their path', () => {
    const d = written();
    editManifest(d, (m) => { m.files[1].ino = 12; });
    expect(imageError(d).message).toContain('files[1].ino');
    editManifest(d, (m) => { m.files[1].ino = '12'; m.processes[0].fdinfoImage = '../../etc/passwd'; });
    expect(imageError(d).message).toContain('processes[0].fdinfoImage');
  });
});

describe.skipIf(missing({ tools: ['crit'] }, 'crit decode of lockmig images'))('crit accepts the images', () => {
  it('decodes filelocks.img, files.img and fdinfo images with the same content', () => {
    const d = tmp();
    writeCheckpoint(d, sample());
    const raw: Record<string, string> = {};
    const dec = (n: string) => {
      const r = spawnSync('crit', ['decode', '-i', path.join(d, n)], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      raw[n] = r.stdout;
      return JSON.parse(r.stdout) as { magic: string; entries: Record<string, any>[] };
    };
    const fl = dec('filelocks.img');
    expect(fl.magic).toBe('FILE_LOCKS');
    expect(fl.entries).toEqual([
      { flag: 4, type: 1, pid: 100, fd: 3, start: 4611686018427387904, len: 4611686018427387903 },
      { flag: 1, type: 0, pid: 101, fd: 3, start: 0, len: 0 },
      { flag: 2, type: 0, pid: 100, fd: 4, start: 0, len: 0 },
      { flag: 1, type: 1, pid: 100, fd: 3, start: 9223372036854775806, len: 1 },
    ]);
    // JSON.parse rounds above 2^53: check the exact digits crit printed
    expect(raw['filelocks.img']).toMatch(/"start": 4611686018427387904,\s*"len": 4611686018427387903\b/);
    expect(raw['filelocks.img']).toMatch(/"start": 9223372036854775806,\s*"len": 1\b/);
    const files = dec('files.img');
    expect(files.magic).toBe('FILES');
    expect(raw['files.img']).toContain('"pos": 4611686018427387911');
    expect(files.entries[0]).toMatchObject({ type: 'REG', id: 1, reg: { id: 1, name: '/data/a b\nc.db', mnt_id: 31 } });
    const fi = dec('fdinfo-101.img');
    expect(fi.magic).toBe('FDINFO');
    expect(fi.entries).toEqual([{ id: 1, flags: 0, type: 'REG', fd: 3 }]);
  });
});
