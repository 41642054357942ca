/**
 * A description handed over from another mount namespace (what the vault does between a source
 * pod and its replacement) must be dumpable again by its new holder: its link text shows the
 * path below the source's detached mount (`/app.db`), and the dump must find the file under the
 * holder's own mount of the same volume — verified by device and inode, never by name alone.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { dumpProcesses } from '../../src/engine/dump.js';
import { findPathInNamespace, pathSuffixes } from '../../src/engine/remap.js';
import { parseProcLocks } from '../../src/proc/index.js';
import { missing } from '../helpers/env.js';

const skip = missing({ root: true, tools: ['unshare', 'python3', 'mount'] }, 'dump of descriptions from another mount namespace');

const cleanups: (() => void)[] = [];
afterEach(() => { for (const c of cleanups.splice(0).reverse()) c(); });

/** A python3 process in its own mount namespace with `bind` mounted; it runs `script`, prints a JSON line, reads stdin lines. */
function inNamespace(binds: ReadonlyArray<[string, string]>, script: string, args: readonly string[] = []): { child: ChildProcessWithoutNullStreams; next: () => Promise<Record<string, unknown>> } {
  const mounts = binds.map(([src, dst]) => `mount --bind '${src}' '${dst}'`).join(' && ');
  const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `${mounts} && exec python3 -u -c "$0" "$@"`, script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  cleanups.push(() => child.kill('SIGKILL'));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  let err = '';
  child.stderr.on('data', (d) => { err += String(d); });
  return {
    child,
    next: async () => {
      const r = await lines.next();
      if (r.done) throw new Error(`namespace process ended: ${err}`);
      return JSON.parse(r.value) as Record<string, unknown>;
    },
  };
}

const HOLDER = String.raw`
import fcntl, json, os, signal, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.fcntl(fd, 37, struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 0, 100, 0))   # F_OFD_SETLK bytes 0..99
print(json.dumps({'pid': os.getpid(), 'fd': fd}))
signal.pause()
`;

// Takes fd N of pid P with pidfd_getfd (as the vault does), then waits.
const TAKER = String.raw`
import ctypes, json, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
print(json.dumps({'pid': os.getpid()}))
pid, fd = map(int, sys.stdin.readline().split())
pidfd = os.pidfd_open(pid)
got = libc.syscall(438, pidfd, fd, 0)
if got < 0: raise OSError(ctypes.get_errno(), 'pidfd_getfd')
os.close(pidfd)
print(json.dumps({'fd': got}))
signal.pause()
`;

function exited(child: ChildProcessWithoutNullStreams): Promise<void> {
  return new Promise((r) => { if (child.exitCode !== null || child.signalCode !== null) r(); else child.once('exit', () => r()); });
}

describe('pathSuffixes', () => {
  it('lists every tail of a path, longest first', () => {
    expect(pathSuffixes('/a/b/c')).toEqual(['/a/b/c', '/b/c', '/c']);
    expect(pathSuffixes('/app.db')).toEqual(['/app.db']);
    expect(pathSuffixes('/')).toEqual([]);
  });
});

describe('findPathInNamespace', () => {
  const mounts = new Map([
    [1, { mntId: 1, parentId: 0, major: 8, minor: 1, root: '/', mountPoint: '/', fsType: 'ext4', source: '/dev/sda1' }],
    [2, { mntId: 2, parentId: 1, major: 8, minor: 1, root: '/vol', mountPoint: '/data', fsType: 'ext4', source: '/dev/sda1' }],
    [3, { mntId: 3, parentId: 1, major: 8, minor: 1, root: '/other', mountPoint: '/data-other', fsType: 'ext4', source: '/dev/sda1' }],
  ]);
  it('accepts only a candidate with the same device and inode, preferring deeper mount points', () => {
    const files: Record<string, { major: number; minor: number; ino: bigint }> = {
      '/proc/9/root/data-other/app.db': { major: 8, minor: 1, ino: 77n }, // same name, another file
      '/proc/9/root/data/app.db': { major: 8, minor: 1, ino: 42n },
    };
    const tried: string[] = [];
    const stat = (p: string) => { tried.push(p); return files[p] ?? null; };
    const r = findPathInNamespace(9, '/app.db', { major: 8, minor: 1, ino: 42n }, mounts, stat);
    expect(r).toMatchObject({ path: '/data/app.db', mount: { mntId: 2 } });
    expect(tried[0]).toBe('/proc/9/root/data-other/app.db');
    expect(findPathInNamespace(9, '/app.db', { major: 8, minor: 1, ino: 99n }, mounts, stat)).toBeUndefined();
    expect(findPathInNamespace(9, 'pipe:[1]', { major: 0, minor: 1, ino: 1n }, mounts, stat)).toBeUndefined();
  });
});

describe.skipIf(skip)('dump of a description taken from another, vanished mount namespace', () => {
  it('records the lock under the holder\'s own path, and the kernel agrees on the inode', async () => {
    const d = mkdtempSync(path.join(tmpdir(), 'lockmig-remap-'));
    cleanups.push(() => rmSync(d, { recursive: true, force: true }));
    for (const x of ['vol', 'other', 'src-mnt', 'dst-mnt', 'decoy-mnt-with-long-name']) mkdirSync(`${d}/${x}`);
    writeFileSync(`${d}/other/app.db`, 'a different file with the same name');

    // the "source pod": the volume mounted at src-mnt in its own mount namespace, OFD lock on app.db
    const src = inNamespace([[`${d}/vol`, `${d}/src-mnt`]], HOLDER, [`${d}/src-mnt/app.db`]);
    const held = await src.next() as { pid: number; fd: number };
    // the "replacement pod": the same volume at dst-mnt, and a decoy volume with another app.db
    const dst = inNamespace([[`${d}/vol`, `${d}/dst-mnt`], [`${d}/other`, `${d}/decoy-mnt-with-long-name`]], TAKER);
    const taker = await dst.next() as { pid: number };
    dst.child.stdin.write(`${held.pid} ${held.fd}\n`);
    const got = await dst.next() as { fd: number };

    // the source exits: its mount namespace and its mount of the volume are gone
    src.child.kill('SIGKILL');
    await exited(src.child);
    const shown = readlinkSync(`/proc/${taker.pid}/fd/${got.fd}`);
    expect(shown, 'the link text is relative to the detached mount').toBe('/app.db');
    const ino = statSync(`${d}/vol/app.db`).ino;
    const kernel = parseProcLocks(readFileSync('/proc/locks', 'utf8')).locks.filter((l) => l.kind === 'OFDLCK' && l.file && Number(l.file.ino) === ino);
    expect(kernel, 'the OFD lock outlived its first holder').toHaveLength(1);

    const c = dumpProcesses({ pids: [taker.pid] });
    expect(c.skipped.filter((s) => s.fd === got.fd)).toEqual([]);
    expect(c.files).toHaveLength(1);
    expect(c.files[0]).toMatchObject({ path: `${d}/dst-mnt/app.db`, mountPoint: `${d}/dst-mnt`, relPath: 'app.db', ino: BigInt(ino) });
    expect(c.locks).toEqual([expect.objectContaining({ kind: 'OFD', type: 'WRITE', start: 0n, end: 99n, fd: got.fd })]);
    expect(c.files[0]!.dev).toEqual({ major: kernel[0]!.file!.major, minor: kernel[0]!.file!.minor });
  });

  it('still reports an fd whose file is nowhere in the holder\'s namespace as unreachable', async () => {
    const d = mkdtempSync(path.join(tmpdir(), 'lockmig-remap-'));
    cleanups.push(() => rmSync(d, { recursive: true, force: true }));
    for (const x of ['vol', 'src-mnt', 'elsewhere']) mkdirSync(`${d}/${x}`);
    const src = inNamespace([[`${d}/vol`, `${d}/src-mnt`]], HOLDER, [`${d}/src-mnt/app.db`]);
    const held = await src.next() as { pid: number; fd: number };
    // the holder's namespace hides the volume: only an empty directory over it
    const dst = inNamespace([[`${d}/elsewhere`, `${d}/vol`]], TAKER);
    const taker = await dst.next() as { pid: number };
    dst.child.stdin.write(`${held.pid} ${held.fd}\n`);
    const got = await dst.next() as { fd: number };
    src.child.kill('SIGKILL');
    await exited(src.child);
    const c = dumpProcesses({ pids: [taker.pid] });
    expect(c.locks).toEqual([]);
    expect(c.skipped).toEqual([expect.objectContaining({ fd: got.fd, reason: 'unreachable', locked: true })]);
  });
});
