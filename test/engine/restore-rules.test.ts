/**
 * Specifications for the pure parts of restore (no root needed): the path policy, the
 * LOCKMIG_FDS format, and how a multi-process checkpoint maps onto one process.
 */
import { describe, expect, it } from 'vitest';
import { checkRecordedPath, resolveUnderRoot, RestoreRefused, type ResolveFs, type RefusalRule } from '../../src/engine/paths.js';
import { formatFds, parseFds, encodePath, decodePath, EnvFdsParseError, type InheritedFd } from '../../src/engine/envfds.js';
import { planRestore, plannedFdNumbers, RestorePlanError } from '../../src/engine/restore-plan.js';
import type { Checkpoint, FileRecord, LockRecord } from '../../src/image/model.js';

function refusal(fn: () => unknown): RefusalRule | 'none' {
  try { fn(); return 'none'; } catch (err) { if (err instanceof RestoreRefused) return err.rule; throw err; }
}

describe('recorded path rules (lexical)', () => {
  const allow = ['/data', '/var/lib/app'];
  it.each([
    ['/data/db', 'none'],
    ['/data', 'none'],
    ['//data///db', 'none'],
    ['/var/lib/app/x/y', 'none'],
    ['/database', 'outside-allowed'], // prefix match is per component
    ['/etc/shadow', 'outside-allowed'],
    ['data/db', 'relative'],
    ['', 'relative'],
    ['/data/../etc/shadow', 'dot-component'],
    ['/data/./db', 'dot-component'],
    ['/data/db\0x', 'nul-byte'],
    ['/proc/1/root/etc/shadow', 'pseudo-fs'],
    ['/sys/kernel/x', 'pseudo-fs'],
  ] as const)('%j → %s', (p, rule) => {
    expect(refusal(() => checkRecordedPath(p, allow))).toBe(rule);
  });

  it('an allow list of "/" still refuses /proc and /sys', () => {
    expect(refusal(() => checkRecordedPath('/proc/self/fd/3', ['/']))).toBe('pseudo-fs');
    expect(checkRecordedPath('/tmp/x', ['/'])).toBe('/tmp/x');
  });

  it('the error names the path and the rule', () => {
    try { checkRecordedPath('/etc/passwd', ['/data']); expect.unreachable(); } catch (err) {
      expect((err as Error).message).toContain('"/etc/passwd"');
      expect((err as Error).message).toContain('outside the allowed prefixes');
      expect((err as RestoreRefused).path).toBe('/etc/passwd');
    }
  });
});

/** A fake tree: paths map to 'dir' | 'file' | 'fifo' | { link: target }. */
function fakeFs(tree: Record<string, 'dir' | 'file' | 'fifo' | { link: string }>): ResolveFs {
  const node = (p: string) => {
    const n = tree[p];
    if (n === undefined) throw Object.assign(new Error(`ENOENT ${p}`), { code: 'ENOENT' });
    return n;
  };
  return {
    kind: (p) => {
      const n = tree[p];
      if (n === undefined) return 'missing';
      return typeof n === 'object' ? 'link' : n === 'dir' ? 'dir' : n === 'file' ? 'file' : 'other';
    },
    readlink: (p) => { const n = node(p); if (typeof n !== 'object') throw new Error('EINVAL'); return n.link; },
  };
}

describe('resolution under --root (symlinks expanded in-root, never above it)', () => {
  const tree = fakeFs({
    '/r/data': 'dir', '/r/data/db': 'file', '/r/data/pipe': 'fifo',
    '/r/data/rel': { link: 'db' }, '/r/data/abs': { link: '/data/db' },
    '/r/data/up': { link: '../../../etc/shadow' }, '/r/data/out': { link: '/etc/shadow' },
    '/r/etc': 'dir', '/r/etc/shadow': 'file',
    '/r/data/loop': { link: 'loop' }, '/r/data/sub': { link: '/data' },
    '/r/data/f': 'file',
  });
  const allow = ['/data'];
  it('plain file', () => expect(resolveUnderRoot('/r', '/data/db', allow, tree).resolved).toBe('/data/db'));
  it('relative symlink inside the prefix', () => expect(resolveUnderRoot('/r', '/data/rel', allow, tree).resolved).toBe('/data/db'));
  it('absolute symlink resolves inside the root, not on the host', () => expect(resolveUnderRoot('/r', '/data/abs', allow, tree).resolved).toBe('/data/db'));
  it('symlinked directory component', () => expect(resolveUnderRoot('/r', '/data/sub/db', allow, tree).resolved).toBe('/data/db'));
  it('symlink climbing above the root is refused', () => expect(refusal(() => resolveUnderRoot('/r', '/data/up', allow, tree))).toBe('symlink-escape'));
  it('symlink leaving the allowed prefix is refused', () => expect(refusal(() => resolveUnderRoot('/r', '/data/out', allow, tree))).toBe('outside-allowed'));
  it('symlink loop is refused', () => expect(refusal(() => resolveUnderRoot('/r', '/data/loop', allow, tree))).toBe('symlink-loop'));
  it('missing file is refused', () => expect(refusal(() => resolveUnderRoot('/r', '/data/nope', allow, tree))).toBe('missing'));
  it('a FIFO is refused (opening it would block)', () => expect(refusal(() => resolveUnderRoot('/r', '/data/pipe', allow, tree))).toBe('file-type'));
  it('a file used as a directory is refused', () => expect(refusal(() => resolveUnderRoot('/r', '/data/f/x', allow, tree))).toBe('not-a-directory'));
});

describe('LOCKMIG_FDS format', () => {
  const entries: InheritedFd[] = [
    { fd: 4, kind: 'FLOCK', type: 'READ', start: 0n, end: 'EOF', path: '/data/my dir/lock' },
    { fd: 3, kind: 'OFD', type: 'WRITE', start: 0n, end: 9n, path: '/data/app.db' },
    { fd: 1000, kind: 'POSIX', type: 'WRITE', start: (1n << 62n) + 1n, end: (1n << 63n) - 1n, path: '/x:y;z%\n/ü' },
    { fd: 7, kind: 'NONE', path: '/data/app.db' },
  ];
  it('formats sorted by fd, with percent-encoded paths and exact 64-bit numbers', () => {
    expect(formatFds(entries)).toBe(
      '3:OFD:WRITE:0:9:/data/app.db;4:FLOCK:READ:0:EOF:/data/my%20dir/lock;7:NONE:-:-:-:/data/app.db;'
      + '1000:POSIX:WRITE:4611686018427387905:9223372036854775807:/x%3Ay%3Bz%25%0A/%C3%BC');
  });
  it('parses back to the same entries', () => {
    expect(parseFds(formatFds(entries))).toEqual([...entries].sort((a, b) => a.fd - b.fd));
  });
  it('empty or unset means no fds', () => {
    expect(parseFds('')).toEqual([]);
    expect(parseFds(undefined)).toEqual([]);
  });
  it.each([
    ['3:OFD:WRITE:0:EOF', 'expected 6'],
    ['x:OFD:WRITE:0:EOF:/a', 'fd'],
    ['3:LEASE:WRITE:0:EOF:/a', 'unknown kind'],
    ['3:OFD:SHARED:0:EOF:/a', 'unknown type'],
    ['3:OFD:WRITE:10:5:/a', 'before start'],
    ['3:OFD:WRITE:0:9223372036854775808:/a', '2^63-1'],
    ['3:OFD:WRITE:0:EOF:/a%zz', 'path'],
    ['3:NONE:READ:-:-:/a', 'NONE'],
  ])('rejects %j', (v, msg) => {
    expect(() => parseFds(v)).toThrow(EnvFdsParseError);
    expect(() => parseFds(v)).toThrow(msg);
  });
  it('encodePath/decodePath round-trip any UTF-8', () => {
    const p = '/a b/c\td/é/日本/%41';
    expect(encodePath(p)).toMatch(/^[A-Za-z0-9\-._~/%]+$/);
    expect(decodePath(encodePath(p))).toBe(p);
  });
});

function file(id: number, p = `/data/f${id}`): FileRecord {
  return { id, path: p, flags: 2, pos: 0n, mntId: 1, dev: { major: 0, minor: 1 }, ino: BigInt(100 + id), mountPoint: '/', relPath: p.slice(1) };
}
function lock(kind: LockRecord['kind'], pid: number, fd: number, fileId: number, type: LockRecord['type'] = 'WRITE', start = 0n, end: bigint | 'EOF' = 'EOF'): LockRecord {
  return { kind, type, start, end, pid, fd, fileId };
}
function ckpt(parts: Partial<Checkpoint>): Checkpoint {
  return {
    formatVersion: 1, createdAt: '2026-01-01T00:00:00Z', source: { hostname: 'h', kernel: 'k', rootPid: 10 }, method: 'fdinfo',
    processes: [{ pid: 10, ppid: 1, nsPid: 1, comm: 'p', cgroup: '/' }, { pid: 11, ppid: 10, nsPid: 2, comm: 'c', cgroup: '/' }],
    files: [], fds: [], locks: [], skipped: [], ...parts,
  };
}

describe('restore plan: a process tree into one process', () => {
  it('the root process keeps its fd numbers; dups of one description become dups', () => {
    const p = planRestore(ckpt({
      files: [file(1), file(2)],
      fds: [{ pid: 10, fd: 3, fileId: 1, cloexec: false }, { pid: 10, fd: 20, fileId: 1, cloexec: true }, { pid: 10, fd: 5, fileId: 2, cloexec: false }],
      locks: [lock('OFD', 10, 3, 1), lock('POSIX', 10, 5, 2)],
    }));
    expect(p.files.map((f) => [f.file.id, f.fds])).toEqual([[1, [3, 20]], [2, [5]]]);
    expect(p.locks.map((l) => [l.lock.kind, l.fd])).toEqual([['OFD', 3], ['POSIX', 5]]);
    expect(plannedFdNumbers(p)).toEqual([3, 5, 20]);
  });

  it('a description inherited by a child is opened once; a child-only one goes to its number when free, else above the highest', () => {
    const p = planRestore(ckpt({
      files: [file(1), file(2), file(3)],
      fds: [
        { pid: 10, fd: 3, fileId: 1, cloexec: false },
        { pid: 11, fd: 3, fileId: 1, cloexec: false }, // inherited
        { pid: 11, fd: 4, fileId: 2, cloexec: false }, // free number in the root
        { pid: 11, fd: 20, fileId: 3, cloexec: false },
        { pid: 10, fd: 20, fileId: 1, cloexec: false }, // root already uses 20
      ],
      locks: [lock('FLOCK', 10, 3, 1), lock('POSIX', 11, 3, 1, 'WRITE', 0n, 99n), lock('OFD', 11, 20, 3, 'READ')],
    }));
    expect(p.files.map((f) => [f.file.id, f.fds])).toEqual([[1, [3, 20]], [2, [4]], [3, [21]]]);
    // the child's POSIX lock on the inherited description is taken through the root's fd
    expect(p.locks.map((l) => [l.lock.kind, l.fd])).toEqual([['FLOCK', 3], ['POSIX', 3], ['OFD', 21]]);
  });

  it('--pid selects source processes; POSIX locks of unselected processes are left out', () => {
    const c = ckpt({
      files: [file(1), file(2)],
      fds: [{ pid: 10, fd: 3, fileId: 1, cloexec: false }, { pid: 11, fd: 4, fileId: 2, cloexec: false }],
      locks: [lock('POSIX', 10, 3, 1), lock('POSIX', 11, 4, 2)],
    });
    const p = planRestore(c, { pids: [11] });
    expect(p.primaryPid).toBe(11);
    expect(p.files.map((f) => f.file.id)).toEqual([2]);
    expect(p.locks.map((l) => l.lock.pid)).toEqual([11]);
    expect(() => planRestore(c, { pids: [99] })).toThrow(RestorePlanError);
  });

  it('never places a file on 0-2 (the program\'s stdio); leases are reported, not restored', () => {
    const p = planRestore(ckpt({
      files: [file(1), file(2)],
      fds: [{ pid: 10, fd: 1, fileId: 1, cloexec: false }, { pid: 10, fd: 7, fileId: 2, cloexec: false }],
      locks: [lock('FLOCK', 10, 1, 1), lock('LEASE', 10, 7, 2, 'READ')],
    }));
    expect(p.files.map((f) => [f.file.id, f.fds])).toEqual([[2, [7]], [1, [8]]]);
    expect(p.notRestored).toHaveLength(1);
    expect(p.notRestored[0]!.reason).toMatch(/lease/i);
  });

  it('identical POSIX locks of two processes merge into one', () => {
    const p = planRestore(ckpt({
      files: [file(1), { ...file(2), ino: 101n }], // two descriptions of the same inode
      fds: [{ pid: 10, fd: 3, fileId: 1, cloexec: false }, { pid: 11, fd: 4, fileId: 2, cloexec: false }],
      locks: [lock('POSIX', 10, 3, 1, 'READ'), lock('POSIX', 11, 4, 2, 'READ')],
    }));
    expect(p.locks).toHaveLength(1);
  });
});
