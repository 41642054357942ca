/**
 * CRIU image directories → lockmig's checkpoint model, on images CRIU 4.2 wrote
 * (test/fixtures/criu, made by capture.ts from real `criu dump --file-locks` runs), and the
 * same defensive standard as readCheckpoint for damaged or hostile images: every failure is
 * an ImageError naming the image (and the entry's offset), never a crash or a partial result.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ImageError, readCheckpoint, writeCheckpoint, type Checkpoint } from '../../src/image/index.js';
import { importCriuDirectory } from '../../src/image/criu/index.js';
import { encodeImage } from '../../src/image/criu.js';
import { CRIU_MAGIC, CriuTypes } from '../../src/image/criu/schema.js';
import { loadCheckpoint, detectInput } from '../../src/image/input.js';
import { REPO_ROOT } from '../helpers/env.js';

const FIX = path.join(REPO_ROOT, 'test/fixtures/criu');
const P62 = 1n << 62n;
const capture = (name: string) => JSON.parse(fs.readFileSync(path.join(FIX, name, 'CAPTURE.json'), 'utf8')) as {
  dataDir: string; hostPid: number; holder: { pid: number; kids: number[]; fds: Record<string, number> };
};

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true }); });
function copyFixture(name: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-criufix-'));
  dirs.push(d);
  for (const n of fs.readdirSync(path.join(FIX, name))) fs.copyFileSync(path.join(FIX, name, n), path.join(d, n));
  return d;
}
function imageError(f: () => unknown): ImageError {
  try { f(); } catch (e) { if (e instanceof ImageError) return e; throw e; }
  throw new Error('accepted a damaged image set');
}
async function asyncImageError(f: () => Promise<unknown>): Promise<ImageError> {
  try { await f(); } catch (e) { if (e instanceof ImageError) return e; throw e; }
  throw new Error('accepted a damaged image set');
}

describe('CRIU 4.2 images → checkpoint', () => {
  it('a plain process: every lock, range (2^62 exact), fd, dup and path with a space', () => {
    const cap = capture('host');
    const c = importCriuDirectory(path.join(FIX, 'host'));
    const pid = cap.hostPid;
    expect(c.method).toBe('criu');
    expect(c.origin).toEqual({ kind: 'criu-dir', path: path.join(FIX, 'host'), criuImgVersion: 2 });
    expect(c.processes).toEqual([{ pid, ppid: expect.any(Number), nsPid: pid, comm: 'python3', cgroup: '' }]);
    const byPath = (name: string) => c.files.find((f) => f.path === path.join(cap.dataDir, name))!;
    const locksOn = (name: string) => c.locks.filter((l) => l.fileId === byPath(name).id).map((l) => [l.kind, l.type, l.start, l.end, l.pid]);
    expect(locksOn('posix lock.db')).toEqual([['POSIX', 'WRITE', 0n, 9n, pid]]);
    expect(locksOn('flock file')).toEqual([['FLOCK', 'WRITE', 0n, 'EOF', pid]]);
    expect(locksOn('flock shared')).toEqual([['FLOCK', 'READ', 0n, 'EOF', pid]]);
    expect(locksOn('ofd big').sort()).toEqual([['OFD', 'READ', 0n, 99n, pid], ['OFD', 'WRITE', P62, P62 + 9n, pid]].sort());
    // SQLite in BEGIN EXCLUSIVE: POSIX locks in the 1 GiB lock page
    expect(locksOn('app.db').some(([k, t, s]) => k === 'POSIX' && t === 'WRITE' && (s as bigint) >= 1073741824n)).toBe(true);
    // the OFD description is shared by its fd and the dup at 40, both recorded
    expect(c.fds.filter((d) => d.fileId === byPath('ofd big').id).map((d) => d.fd).sort((a, b) => a - b)).toEqual([cap.holder.fds.ofd, 40].sort((a, b) => a - b));
    // only locked descriptions are kept (not the python binary, stdio, the journal)
    expect(c.files.every((f) => c.locks.some((l) => l.fileId === f.id))).toBe(true);
    expect(byPath('flock file')).toMatchObject({ mntId: -1, ino: 0n, mountPoint: '', relPath: '', flags: 0o100002 });
    expect(c.skipped).toEqual([]);
    expect(c.warnings).toBeUndefined();
  });

  it('a container: paths as the container saw them, resolved through CRIU\'s mount ids to the volume\'s mount', () => {
    const c = importCriuDirectory(path.join(FIX, 'container'));
    expect(c.source.rootPid).toBe(1);
    const f = c.files.find((x) => x.path === '/data/vol a/posix lock.db')!;
    expect(f).toMatchObject({ mountPoint: '/data/vol a', relPath: 'posix lock.db' });
    expect(f.mntId).toBeGreaterThan(0);
    expect(f.dev.major).toBeGreaterThan(0); // mnt_entry.root_dev (kernel encoding) split into major:minor
    expect(c.locks.filter((l) => l.pid === 1).length).toBe(c.locks.length);
    expect(c.files.every((x) => x.path.startsWith('/data/vol a/'))).toBe(true);
  });

  it('CRIU\'s dropped inherited POSIX lock: the shared OFD lock is imported once, with both holders, and a warning explains the gap', () => {
    const cap = capture('fork-gap');
    const c = importCriuDirectory(path.join(FIX, 'fork-gap'));
    expect(c.processes.map((p) => p.pid)).toEqual([cap.hostPid, cap.holder.kids[0]]);
    expect(c.locks.map((l) => [l.kind, l.type, l.start, l.end])).toEqual([['OFD', 'WRITE', 0n, 0n]]);
    expect(c.fds.map((d) => d.pid).sort()).toEqual([cap.hostPid, cap.holder.kids[0]!].sort());
    expect(c.warnings?.join(' ')).toMatch(/inherited from its parent.*cannot be restored/);
  });

  it('locked fds that cannot be reopened by path are reported per fd with the reason', () => {
    const cap = capture('unmappable');
    const c = importCriuDirectory(path.join(FIX, 'unmappable'));
    expect(c.skipped.map((s) => [s.fd, s.reason, s.locked]).sort()).toEqual([[cap.holder.fds.memfd, 'memfd', true], [cap.holder.fds.deleted, 'deleted', true]].sort());
    expect(c.skipped.find((s) => s.reason === 'deleted')!.target).toMatch(/gone \(deleted\)$/);
    expect(c.locks.some((l) => l.fd === cap.holder.fds.memfd || l.fd === cap.holder.fds.deleted)).toBe(false);
    expect(c.locks.length).toBe(5);
  });

  it('round-trips through a lockmig directory unchanged (manifest keeps method criu and the origin)', () => {
    for (const name of ['host', 'container', 'fork-gap', 'unmappable']) {
      const c = importCriuDirectory(path.join(FIX, name));
      const d = copyFixture('host');
      fs.rmSync(d, { recursive: true });
      writeCheckpoint(d, c);
      expect(readCheckpoint(d)).toEqual(c);
    }
  });

  it('input detection: lockmig directory, CRIU directory, archive file; neither → a clear MISSING', async () => {
    expect(detectInput(path.join(FIX, 'host'))).toBe('criu-dir');
    expect(detectInput(path.join(FIX, 'host', 'files.img'))).toBe('archive');
    const empty = copyFixture('host');
    for (const n of fs.readdirSync(empty)) fs.rmSync(path.join(empty, n));
    const e = await asyncImageError(() => loadCheckpoint(empty));
    expect(e.code).toBe('MISSING');
    expect(e.message).toMatch(/neither a lockmig checkpoint .* nor a CRIU image directory/);
    expect((await loadCheckpoint(path.join(FIX, 'host'))).method).toBe('criu');
  });
});

describe('damaged or hostile CRIU images give an ImageError naming the image', () => {
  const rewrite = (d: string, name: string, f: (b: Buffer) => Buffer) => fs.writeFileSync(path.join(d, name), f(fs.readFileSync(path.join(d, name))));
  const enc = (magic: number, type: keyof typeof CriuTypes, entries: object[]) => encodeImage(magic, CriuTypes[type], entries);

  it('unsupported inventory version → VERSION; inventory with the common magic → BAD_MAGIC', () => {
    const d = copyFixture('host');
    rewrite(d, 'inventory.img', () => { const b = enc(CRIU_MAGIC.INVENTORY, 'inventory', [{ img_version: 1 }]); return b.subarray(4); });
    expect(imageError(() => importCriuDirectory(d))).toMatchObject({ code: 'VERSION', file: path.join(d, 'inventory.img') });
    rewrite(d, 'inventory.img', () => enc(CRIU_MAGIC.INVENTORY, 'inventory', [{ img_version: 2 }]));
    expect(imageError(() => importCriuDirectory(d)).code).toBe('BAD_MAGIC');
  });

  it('truncated, wrong magic, implausible length, undecodable entry', () => {
    const d = copyFixture('host');
    const files = fs.readFileSync(path.join(d, 'files.img'));
    rewrite(d, 'files.img', (b) => b.subarray(0, b.length - 3));
    let e = imageError(() => importCriuDirectory(d));
    expect(e).toMatchObject({ code: 'TRUNCATED', file: path.join(d, 'files.img') });
    expect(e.offset).toBeGreaterThanOrEqual(8);
    rewrite(d, 'files.img', () => { const b = Buffer.from(files); b.writeUInt32LE(CRIU_MAGIC.PSTREE, 4); return b; });
    expect(imageError(() => importCriuDirectory(d))).toMatchObject({ code: 'BAD_MAGIC', offset: 4 });
    rewrite(d, 'files.img', () => { const b = Buffer.from(files); b.writeUInt32LE(0x7fffffff, 8); return b; });
    expect(imageError(() => importCriuDirectory(d)).message).toMatch(/implausible/);
    rewrite(d, 'files.img', () => Buffer.concat([files.subarray(0, 8), Buffer.from([3, 0, 0, 0, 0xff, 0xff, 0xff])]));
    e = imageError(() => importCriuDirectory(d));
    expect(e).toMatchObject({ code: 'INVALID', offset: 8 });
  });

  it('inconsistent references: a lock on an fd the process does not have, of a pid not in pstree, an unknown kind, a bad range', () => {
    const cap = capture('host');
    const d = copyFixture('host');
    const lock = (over: object) => enc(CRIU_MAGIC.FILE_LOCKS, 'fileLock', [{ flag: 1, type: 1, pid: cap.hostPid, fd: cap.holder.fds.posix, start: 0, len: 10, ...over }]);
    const cases: [object, RegExp][] = [
      [{ fd: 999 }, /fd 999.*does not hold/], [{ pid: 4242 }, /pid 4242, which pstree.img does not hold/],
      [{ flag: 16 }, /unknown lock flag 16/], [{ type: 7 }, /type 7/], [{ start: -5 }, /bad range/],
    ];
    for (const [over, re] of cases) {
      rewrite(d, 'filelocks.img', () => lock(over));
      const e = imageError(() => importCriuDirectory(d));
      expect(e.code).toBe('INVALID');
      expect(e.file).toBe(path.join(d, 'filelocks.img'));
      expect(e.offset).toBe(8);
      expect(e.message).toMatch(re);
    }
  });

  it('missing ids, duplicate pids or fds, a symlinked image, a too large image or too many entries', () => {
    const cap = capture('host');
    let d = copyFixture('host');
    fs.rmSync(path.join(d, `ids-${cap.hostPid}.img`));
    expect(imageError(() => importCriuDirectory(d))).toMatchObject({ code: 'MISSING', file: path.join(d, `ids-${cap.hostPid}.img`) });
    d = copyFixture('host');
    rewrite(d, 'pstree.img', () => enc(CRIU_MAGIC.PSTREE, 'pstree', [{ pid: cap.hostPid, ppid: 0, pgid: 0, sid: 0 }, { pid: cap.hostPid, ppid: 0, pgid: 0, sid: 0 }]));
    expect(imageError(() => importCriuDirectory(d)).message).toMatch(/appears twice/);
    d = copyFixture('host');
    rewrite(d, 'fdinfo-2.img', (b) => Buffer.concat([b, b.subarray(8, 8 + 4 + b.readUInt32LE(8))]));
    expect(imageError(() => importCriuDirectory(d)).message).toMatch(/fd \d+ appears twice/);
    d = copyFixture('host');
    fs.renameSync(path.join(d, 'files.img'), path.join(d, 'real-files'));
    fs.symlinkSync(path.join(d, 'real-files'), path.join(d, 'files.img'));
    expect(imageError(() => importCriuDirectory(d)).message).toMatch(/symbolic link/);
    d = copyFixture('host');
    expect(imageError(() => importCriuDirectory(d, { limits: { maxImageBytes: 1000, maxEntries: 1000 } })).message).toMatch(/more than the 1000-byte limit/);
    expect(imageError(() => importCriuDirectory(d, { limits: { maxImageBytes: 1 << 20, maxEntries: 3 } })).message).toMatch(/more than 3 entries/);
  });

  it('fuzz: any single-byte damage to any image is either still a valid image set or an ImageError', () => {
    let seed = 12345;
    const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
    for (const name of ['host', 'container', 'fork-gap', 'unmappable']) {
      const d = copyFixture(name);
      const images = fs.readdirSync(d).filter((n) => n.endsWith('.img'));
      for (let i = 0; i < 150; i++) {
        const img = images[rnd(images.length)]!;
        const orig = fs.readFileSync(path.join(d, img));
        const b = Buffer.from(orig);
        const at = rnd(b.length);
        b[at] = rnd(256);
        fs.writeFileSync(path.join(d, img), rnd(4) === 0 ? b.subarray(0, at) : b);
        let c: Checkpoint | undefined;
        try { c = importCriuDirectory(d); } catch (e) {
          if (!(e instanceof ImageError)) throw new Error(`${name}/${img} byte ${at}: ${(e as Error).stack}`);
        }
        if (c) {
          // whatever survives the damage is still a consistent model
          const t = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-fz-'));
          dirs.push(t);
          expect(() => writeCheckpoint(t, c!)).not.toThrow();
        }
        fs.writeFileSync(path.join(d, img), orig);
      }
    }
  });
});
