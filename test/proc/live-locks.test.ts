/**
 * The live lock snapshot (src/proc/live-locks.ts) against real processes: python3 holders of
 * POSIX, OFD and flock locks, and real blocked waiters (python3 in F_SETLKW and F_OFD_SETLKW,
 * flock(1) in flock(2)). Checked against /proc/locks and lslocks, which nobody here wrote.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { parseProcLocksTree, snapshotLocks, fileKeyOf, parseSyscallLine, visiblePath, type LockSnapshot } from '../../src/proc/live-locks.js';
import { parseMountinfo } from '../../src/proc/mountinfo.js';
import { startHolder, PYTHON, type Holder } from './holder.js';
import { missing } from '../helpers/env.js';

describe('parseProcLocksTree', () => {
  it('keeps the blocked tree: depth from the indentation, parent and root per waiter', () => {
    const text = [
      '1: FLOCK  ADVISORY  WRITE 28381 fe:00:5390769 0 EOF',
      '2: POSIX  ADVISORY  WRITE 31093 fe:00:2146336 0 EOF',
      '2: -> POSIX  ADVISORY  WRITE 31167 fe:00:2146336 0 EOF',
      '2:  -> OFDLCK ADVISORY  WRITE -1 fe:00:2146336 0 EOF',
      '2: -> POSIX  ADVISORY  READ 31200 fe:00:2146336 5 9',
      '3: OFDLCK ADVISORY  READ -1 fe:00:15343629 0 99',
      '',
    ].join('\n');
    const t = parseProcLocksTree(text);
    expect(t.map((e) => [e.depth, e.parent, e.root])).toEqual([[0, -1, 0], [0, -1, 1], [1, 1, 1], [2, 2, 1], [1, 1, 1], [0, -1, 5]]);
    expect(t[3]!.lock.kind).toBe('OFDLCK');
    expect(fileKeyOf(t[3]!.lock.file)).toBe('fe:00:2146336');
    expect(() => parseProcLocksTree('1:  -> POSIX  ADVISORY  WRITE 2 fe:00:1 0 EOF\n')).toThrow(/depth 2/);
    expect(() => parseProcLocksTree('1: POSIX  ADVISORY  WRITE x fe:00:1 0 EOF\n')).toThrow(/bad pid/);
  });

  it('parses /proc/<tid>/syscall lines', () => {
    expect(parseSyscallLine('72 0x3 0x26 0x7ffcd44f17b0 0x0 0x0 0x0 0x7ffcd44f1720 0x7f78ee716810\n')).toEqual({ nr: 72, args: [3n, 38n, 0x7ffcd44f17b0n, 0n, 0n, 0n] });
    expect(parseSyscallLine('running\n')).toBeNull();
    expect(parseSyscallLine('-1 0x7ffc 0x7f\n')).toBeNull();
  });
});

const skip = missing({ root: true, tools: ['python3', 'lslocks', 'flock'] }, 'live lock snapshot on real processes');

/** A process blocked in a lock call on `file`; prints its fd first. */
function startWaiter(kind: 'POSIX' | 'OFD' | 'FLOCK', file: string): Promise<{ child: ChildProcess; pid: number; fd: number }> {
  const child = kind === 'FLOCK'
    ? spawn('sh', ['-c', 'exec 7<>"$0"; echo 7; exec flock 7', file], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(PYTHON, ['-c', `
import os, sys, fcntl, struct
fd = os.open(sys.argv[1], os.O_RDWR)
os.write(1, (str(fd) + '\\n').encode())
fcntl.fcntl(fd, ${kind === 'POSIX' ? 7 : 38}, struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 0, 0, 0))
`, file], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve({ child, pid: child.pid!, fd: parseInt(out, 10) });
    });
    child.once('exit', (c) => reject(new Error(`waiter exited (${c})`)));
  });
}

describe.skipIf(skip)('snapshotLocks on real processes', () => {
  let dir: string;
  let holder: Holder;
  const waiters: { kind: 'POSIX' | 'OFD' | 'FLOCK'; child: ChildProcess; pid: number; fd: number; file: string }[] = [];
  let snap: LockSnapshot;
  let files: Record<string, string>;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-live-'));
    files = { posix: path.join(dir, 'app.db'), ofd: path.join(dir, 'ofd.lock'), flock: path.join(dir, 'dir with space.lock') };
    holder = await startHolder([
      { op: 'open', name: 'p', path: files.posix },
      { op: 'posix', fd: 'p', type: 'w', start: 0n, len: 0n },
      { op: 'open', name: 'o', path: files.ofd },
      { op: 'ofd', fd: 'o', type: 'w', start: 0n, len: 100n },
      { op: 'open', name: 'f', path: files.flock },
      { op: 'flock', fd: 'f', type: 'w' },
      { op: 'dup', fd: 'f', as: 'f2' },
    ]);
    for (const kind of ['POSIX', 'OFD', 'FLOCK'] as const) {
      const file = kind === 'POSIX' ? files.posix : kind === 'OFD' ? files.ofd : files.flock;
      waiters.push({ kind, file, ...(await startWaiter(kind, file)) });
    }
    // until the kernel has queued all three
    const inos = Object.values(files).map((f) => `:${fs.statSync(f).ino} `);
    for (let i = 0; i < 200; i++) {
      const w = fs.readFileSync('/proc/locks', 'utf8').split('\n').filter((l) => l.includes('->') && inos.some((x) => l.includes(x)));
      if (w.length === 3) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    snap = snapshotLocks({ pids: [holder.procs.get('root')!.pid, ...waiters.map((w) => w.pid)] });
  });

  afterAll(() => {
    holder?.kill();
    for (const w of waiters) w.child.kill('SIGKILL');
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lists every held lock with its fd, path and the file key /proc/locks prints', () => {
    const root = holder.procs.get('root')!;
    const procLocks = fs.readFileSync('/proc/locks', 'utf8');
    const mine = snap.locks.filter((l) => l.pid === root.pid);
    expect(mine.map((l) => [l.kind, l.type, String(l.start), String(l.end), l.path]).sort()).toEqual([
      ['FLOCK', 'WRITE', '0', 'EOF', files.flock],
      ['OFD', 'WRITE', '0', '99', files.ofd],
      ['POSIX', 'WRITE', '0', 'EOF', files.posix],
    ]);
    const fl = mine.find((l) => l.kind === 'FLOCK')!;
    expect(fl.fds).toEqual([root.fds.f, root.fds.f2].sort((a, b) => a! - b!));
    expect(mine.find((l) => l.kind === 'POSIX')!.fd).toBe(root.fds.p);
    for (const l of mine) {
      const st = fs.statSync(l.path!);
      expect(l.file!.ino).toBe(BigInt(st.ino));
      // the same file key, kind and owner in /proc/locks (its held line, not a `->` one)
      const kernelKind = l.kind === 'OFD' ? 'OFDLCK' : l.kind;
      const pid = l.kind === 'OFD' ? -1 : root.pid;
      expect(procLocks).toMatch(new RegExp(`^\\d+: ${kernelKind}\\s+ADVISORY\\s+WRITE ${pid} ${l.fileKey} `, 'm'));
    }
  });

  it('agrees with lslocks on holders and paths', () => {
    const root = holder.procs.get('root')!;
    const ls = JSON.parse(spawnSync('lslocks', ['-J', '-o', 'PID,TYPE,MODE,START,END,PATH,BLOCKER', '--notruncate'], { encoding: 'utf8' }).stdout) as { locks: { pid: number; type: string; mode: string; path: string | null; start: number; end: number; blocker?: number | null }[] };
    for (const [kind, file] of [['POSIX', files.posix], ['FLOCK', files.flock]] as const) {
      const row = ls.locks.find((r) => r.pid === root.pid && r.type === kind && !r.mode.endsWith('*'));
      expect(row, `${kind} in lslocks`).toBeDefined();
      expect(row!.path).toBe(file);
    }
    // lslocks shows the POSIX waiter with a `*` mode (blocked) and its pid: so do we
    const pw = waiters.find((w) => w.kind === 'POSIX')!;
    expect(ls.locks.some((r) => r.pid === pw.pid && r.mode === 'WRITE*')).toBe(true);
  });

  it('pairs each blocked waiter with its holder, and finds its pid and fd (also the OFD waiter /proc/locks shows as -1)', () => {
    const root = holder.procs.get('root')!;
    expect(snap.waiters).toHaveLength(3);
    for (const w of waiters) {
      const got = snap.waiters.find((x) => x.kind === w.kind);
      expect(got, w.kind).toBeDefined();
      expect(got!.pid).toBe(w.pid);
      expect(got!.fd).toBe(w.fd);
      expect(got!.path).toBe(w.file);
      expect(got!.pathFrom).toBe('fd');
      expect(got!.depth).toBe(1);
      expect(got!.holder.locks).toHaveLength(1);
      const h = snap.locks[got!.holder.locks[0]!]!;
      expect([h.pid, h.kind, h.path]).toEqual([root.pid, w.kind, w.file]);
      expect(got!.fileKey).toBe(h.fileKey);
    }
  });

  it('lists fds open on a locked file without a lock of their own (a reader, a poller), not the holder\'s nor a waiter\'s', async () => {
    const root = holder.procs.get('root')!;
    const reader = await startHolder([{ op: 'open', name: 'r', path: files.posix, mode: 'ro' }, { op: 'open', name: 'x', path: path.join(dir, 'unlocked') }]);
    try {
      const r = reader.procs.get('root')!;
      const s = snapshotLocks({ pids: [root.pid, r.pid, ...waiters.map((w) => w.pid)] });
      expect(s.opens.map((o) => [o.pid, o.fd, o.path])).toEqual([[r.pid, r.fds.r, files.posix]]);
      expect(s.opens[0]!.fileKey).toBe(s.locks.find((l) => l.kind === 'POSIX')!.fileKey);
    } finally {
      reader.kill();
    }
  });

  it('a waiter queued behind another waiter (depth 2) is paired with the holder at the head of the chain', async () => {
    const file = path.join(dir, 'chain.lock');
    const h = await startHolder([{ op: 'open', name: 'c', path: file }, { op: 'posix', fd: 'c', type: 'w', start: 0n, len: 0n }]);
    const first = await startWaiter('POSIX', file);
    for (let i = 0; i < 200 && !fs.readFileSync('/proc/locks', 'utf8').includes(`-> POSIX  ADVISORY  WRITE ${first.pid} `); i++) await new Promise((r) => setTimeout(r, 25));
    const second = await startWaiter('OFD', file);
    try {
      let depth2 = '';
      for (let i = 0; i < 200 && !depth2; i++) {
        depth2 = fs.readFileSync('/proc/locks', 'utf8').split('\n').find((l) => /^\d+:  -> OFDLCK/.test(l) && l.includes(`:${fs.statSync(file).ino} `)) ?? '';
        if (!depth2) await new Promise((r) => setTimeout(r, 25));
      }
      expect(depth2, 'the kernel queues the OFD waiter behind the POSIX waiter').not.toBe('');
      const hp = h.procs.get('root')!.pid;
      const s = snapshotLocks({ pids: [hp, first.pid, second.pid] });
      const w1 = s.waiters.findIndex((w) => w.pid === first.pid);
      const w2 = s.waiters.find((w) => w.pid === second.pid)!;
      expect(w1).toBeGreaterThanOrEqual(0);
      expect([w2.depth, w2.kind, w2.fd, w2.blockedBy.waiter]).toEqual([2, 'OFD', second.fd, w1]);
      expect(s.locks[w2.holder.locks[0]!]!.pid).toBe(hp);
    } finally {
      first.child.kill('SIGKILL');
      second.child.kill('SIGKILL');
      h.kill();
    }
  });

  it('host-wide (no pids) finds the same holders and waiters', () => {
    const all = snapshotLocks();
    const root = holder.procs.get('root')!;
    expect(all.locks.filter((l) => l.pid === root.pid)).toHaveLength(3);
    const pw = waiters.find((w) => w.kind === 'POSIX')!;
    expect(all.waiters.find((x) => x.pid === pw.pid)?.fd).toBe(pw.fd);
    expect(all.stats.processes).toBeGreaterThan(3);
  });

  it('a waiter outside the scanned set whose holder is in it is still shown (by its pid, with the holder\'s path when its fd is unknown)', () => {
    const root = holder.procs.get('root')!;
    const s = snapshotLocks({ pids: [root.pid] });
    const pw = waiters.find((w) => w.kind === 'POSIX')!;
    const got = s.waiters.find((x) => x.kind === 'POSIX');
    expect(got?.pid).toBe(pw.pid);
    // its thread is still found through the line's pid
    expect(got?.fd).toBe(pw.fd);
    expect(s.waiters.find((x) => x.kind === 'OFD')?.pathFrom).toBe('holder');
  });
});

describe('visiblePath: a description opened in another mount namespace', () => {
  it('finds the same inode below the process\'s own mount of that filesystem, and only the same inode', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-visible-'));
    try {
      const file = path.join(dir, 'app.db');
      fs.writeFileSync(file, 'x');
      const st = fs.statSync(file, { bigint: true });
      const mounts = parseMountinfo(fs.readFileSync('/proc/self/mountinfo', 'utf8'), '/proc/self/mountinfo');
      // the mount this file lives on (longest mount point that is a prefix of its path)
      const m = [...mounts.values()].filter((x) => file.startsWith(x.mountPoint === '/' ? '/' : `${x.mountPoint}/`)).sort((a, b) => b.mountPoint.length - a.mountPoint.length)[0]!;
      // what the kernel prints for a mount the process does not have: the path below that mount's root
      const link = m.mountPoint === '/' ? file : file.slice(m.mountPoint.length);
      const dev = { major: m.major, minor: m.minor, ino: st.ino };
      const absent = Math.max(...mounts.keys()) + 1000;
      expect(visiblePath(process.pid, link, absent, st.ino, dev, mounts)).toBe(file);
      // a mount of its own namespace: the link as it is
      expect(visiblePath(process.pid, link, m.mntId, st.ino, dev, mounts)).toBe(link);
      // another inode at that place: never a guess
      expect(visiblePath(process.pid, link, absent, st.ino + 1n, dev, mounts)).toBe(link);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
