/**
 * Regression tests for what the image fuzzer (test/fuzz) caught: checkpoint files that are not
 * regular files. Before the fix, a FIFO named manifest.json (or an image) blocked the reader
 * forever, and a symlink to /dev/zero or /dev/urandom was read until memory ran out; a sparse
 * file claiming terabytes was read in full before its size was compared with the manifest.
 * The blocking cases run through the real CLI (`lockmig inspect`) with a time limit, so a
 * regression fails the test instead of hanging it.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ImageError, readCheckpoint, writeCheckpoint, type Checkpoint } from '../../src/image/index.js';
import { runCli } from '../helpers/env.js';

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true }); });

function written(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-saferead-'));
  dirs.push(d);
  const c: Checkpoint = {
    formatVersion: 1, createdAt: '2026-11-26T23:00:00.000Z', method: 'fdinfo', source: { hostname: 'n', kernel: 'k', rootPid: 10 },
    processes: [{ pid: 10, ppid: 1, nsPid: 1, comm: 'db', cgroup: '/' }],
    files: [{ id: 1, path: '/data/db', flags: 0o100002, pos: 0n, mntId: 30, dev: { major: 254, minor: 1 }, ino: 5n, mountPoint: '/data', relPath: 'db' }],
    fds: [{ pid: 10, fd: 3, fileId: 1, cloexec: false }],
    locks: [{ kind: 'OFD', type: 'WRITE', start: 0n, end: 'EOF', pid: 10, fd: 3, fileId: 1 }],
    skipped: [],
  };
  writeCheckpoint(d, c);
  return d;
}

function replaceWith(dir: string, name: string, how: 'fifo' | { symlink: string }): void {
  const p = path.join(dir, name);
  fs.rmSync(p);
  if (how === 'fifo') expect(spawnSync('mkfifo', [p]).status).toBe(0);
  else fs.symlinkSync(how.symlink, p);
}

function inspectExit(dir: string) {
  const r = runCli(['inspect', dir], { timeoutMs: 20_000 });
  expect(r.error, 'lockmig inspect did not finish within 20 s (blocked on the file?)').toBeUndefined();
  return r;
}

describe('checkpoint files that are not regular files are refused, never read', () => {
  it.each([
    ['manifest.json', 'fifo', /manifest\.json: not a regular file: .* is a FIFO/],
    ['filelocks.img', 'fifo', /filelocks\.img: not a regular file: .* is a FIFO/],
    ['manifest.json', { symlink: '/dev/zero' }, /manifest\.json: not a regular file: .* is a symbolic link/],
    ['files.img', { symlink: '/dev/urandom' }, /files\.img: not a regular file: .* is a symbolic link/],
  ] as const)('%s as %j: exit 5 at once (fuzz: hang)', (name, how, msg) => {
    const d = written();
    replaceWith(d, name, how);
    const r = inspectExit(d);
    expect(r.status, r.stderr).toBe(5);
    expect(r.stderr).toMatch(msg);
  });

  it('an image that is a symlink to a readable file outside the directory is not followed', () => {
    const d = written();
    const outside = path.join(path.dirname(d), `${path.basename(d)}-outside.img`);
    fs.copyFileSync(path.join(d, 'files.img'), outside);
    dirs.push(outside);
    replaceWith(d, 'files.img', { symlink: outside });
    expect(() => readCheckpoint(d)).toThrow(ImageError);
    expect(() => readCheckpoint(d)).toThrow(/files\.img: not a regular file: .* symbolic link/);
  });

  it('a sparse image of 1 TiB is refused from its size, before any byte is read', () => {
    const d = written();
    const p = path.join(d, 'filelocks.img');
    fs.truncateSync(p, 2 ** 40);
    const m = JSON.parse(fs.readFileSync(path.join(d, 'manifest.json'), 'utf8'));
    let e = catchImageError(() => readCheckpoint(d));
    expect(e.code).toBe('CHECKSUM');
    expect(e.message).toContain(`${2 ** 40} bytes, the manifest records ${m.images['filelocks.img'].size}`);
    // the manifest agrees with the huge size: still refused, as too large to be an image
    m.images['filelocks.img'].size = 2 ** 40;
    fs.writeFileSync(path.join(d, 'manifest.json'), JSON.stringify(m));
    e = catchImageError(() => readCheckpoint(d));
    expect(e.code).toBe('INVALID');
    expect(e.message).toMatch(/filelocks\.img: larger than \d+ bytes/);
  });
});

function catchImageError(f: () => unknown): ImageError {
  try { f(); } catch (e) { if (e instanceof ImageError) return e; throw e; }
  throw new Error('no ImageError');
}
