/**
 * /proc parsers against real kernel captures (test/fixtures/proc, see its README) and
 * hand-made malformed lines: every bad line must be rejected with its text and line number.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  classifyFdTarget, parseCgroupPath, parseFdinfo, parseLockLine, parseMountinfo, parseProcLocks, parseStatPpid, parseStatus,
  ProcParseError, splitByMount,
} from '../../src/proc/index.js';
import { REPO_ROOT } from '../helpers/env.js';

const fx = (name: string) => readFileSync(path.join(REPO_ROOT, 'test/fixtures/proc', name), 'utf8');

describe('fdinfo', () => {
  it('parses an OFD-locked fd with pos, octal flags, mnt_id, ino and both locks', () => {
    const f = parseFdinfo(fx('fdinfo-ofd.txt'), 'fdinfo-ofd');
    expect(f.pos).toBe(0n);
    expect(f.flags).toBe(0o2100002);
    expect(f.mntId).toBe(26);
    expect(f.ino).toBe(2146614n);
    expect(f.locks.map((l) => [l.kind, l.type, l.pid, l.start, l.end])).toEqual([
      ['OFDLCK', 'WRITE', -1, 10n, 29n], ['OFDLCK', 'READ', -1, 50n, 'EOF'],
    ]);
    expect(f.locks[0]!.file).toEqual({ major: 0xfe, minor: 0, ino: 2146614n });
  });

  it('keeps 64-bit offsets exact (2^61 and 2^62, pos 2^40+5)', () => {
    const f = parseFdinfo(fx('fdinfo-big.txt'), 'fdinfo-big');
    expect(f.pos).toBe((1n << 40n) + 5n);
    expect(f.locks[0]!.start).toBe(1n << 61n);
    expect(f.locks[0]!.end).toBe((1n << 61n) + 9n);
    expect(f.locks[1]!.start).toBe(4611686018427387904n);
    expect(f.locks[1]!.end).toBe('EOF');
  });

  it('parses POSIX, FLOCK and LEASE lines with the owner pid', () => {
    expect(parseFdinfo(fx('fdinfo-posix.txt'), 'p').locks[0]).toMatchObject({ kind: 'POSIX', type: 'WRITE', pid: 14474, start: 0n, end: 'EOF' });
    expect(parseFdinfo(fx('fdinfo-flock.txt'), 'f').locks[0]).toMatchObject({ kind: 'FLOCK', type: 'READ', mode: 'ADVISORY' });
    const lease = parseFdinfo(fx('fdinfo-lease.txt'), 'l');
    expect(lease.flags & 0o3).toBe(0); // O_RDONLY
    expect(lease.locks[0]).toMatchObject({ kind: 'LEASE', mode: 'ACTIVE', type: 'READ' });
  });

  it('keeps type-specific lines of other files as extra, with no locks', () => {
    const e = parseFdinfo(fx('fdinfo-eventfd.txt'), 'e');
    expect(e.locks).toEqual([]);
    expect(e.extra.some((l) => l.startsWith('eventfd-count:'))).toBe(true);
    expect(parseFdinfo(fx('fdinfo-pipe.txt'), 'p').flags).toBe(0o2000000);
  });

  it.each([
    ['pos:\tx\nflags:\t02\nmnt_id:\t1\n', 1, 'bad pos'],
    ['pos:\t0\nflags:\t0289\nmnt_id:\t1\n', 2, 'octal'],
    ['pos:\t0\nflags:\t02\nmnt_id:\t1\nlock:\t1: OFDLCK ADVISORY  WRITE -1 fe:00:12 10\n', 4, 'bad end'],
    ['pos:\t0\nflags:\t02\nmnt_id:\t1\nlock:\t1: WEIRD ADVISORY  WRITE -1 fe:00:12 10 20\n', 4, 'unknown lock kind'],
    ['pos:\t0\nflags:\t02\nmnt_id:\t1\nno colon here\n', 4, 'key: value'],
  ])('rejects malformed input %# quoting the line and its number', (text, lineNo, why) => {
    let err: unknown;
    try { parseFdinfo(text, '/proc/1/fdinfo/3'); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(ProcParseError);
    const pe = err as ProcParseError;
    expect(pe.lineNo).toBe(lineNo);
    expect(pe.message).toContain(`/proc/1/fdinfo/3:${lineNo}`);
    expect(pe.message).toContain(why);
    expect(pe.message).toContain(JSON.stringify(text.split('\n')[lineNo - 1]!.replace(/^lock:\t/, '')));
  });

  it('parses a plain unlocked file exactly (fast path), 64-bit pos and inode included', () => {
    const f = parseFdinfo('pos:\t9223372036854775807\nflags:\t0100002\nmnt_id:\t4294967295\nino:\t18446744073709551615\n', 'plain');
    expect(f).toEqual({ pos: 9223372036854775807n, flags: 0o100002, mntId: 4294967295, ino: 18446744073709551615n, locks: [], extra: [] });
  });

  it('rejects a file without pos/flags/mnt_id', () => {
    expect(() => parseFdinfo('ino:\t5\n', 'x')).toThrow(ProcParseError);
  });
});

describe('lock lines', () => {
  it('rejects end before start, offsets beyond int64, bad dev', () => {
    expect(() => parseLockLine('1: POSIX  ADVISORY  WRITE 1 fe:00:1 20 10', 's', 1)).toThrow(/out of range/);
    expect(() => parseLockLine('1: POSIX  ADVISORY  WRITE 1 fe:00:1 9223372036854775808 EOF', 's', 1)).toThrow(/out of range/);
    expect(() => parseLockLine('1: POSIX  ADVISORY  WRITE 1 fe-00-1 0 EOF', 's', 1)).toThrow(/maj:min:ino/);
    expect(() => parseLockLine('1: POSIX  ADVISORY  WRITE 1 fe:00:1 0 EOF extra', 's', 1)).toThrow(/trailing/);
  });
  it('parses the largest offsets exactly and <none> inodes', () => {
    const l = parseLockLine('7: POSIX  ADVISORY  READ 5 103:02:99 4611686018427387904 9223372036854775806', 's', 1);
    expect(l.end).toBe(9223372036854775806n);
    expect(l.file).toEqual({ major: 0x103, minor: 2, ino: 99n });
    expect(parseLockLine('2: DELEG  ACTIVE    READ 0 <none> 0 EOF', 's', 1).file).toBeNull();
  });
});

describe('/proc/locks', () => {
  it('drops blocked waiters and keeps every held lock', () => {
    const t = parseProcLocks(fx('locks.txt'));
    expect(t.waiters).toBe(1);
    expect(t.locks).toHaveLength(8);
    expect(t.locks.every((l) => !l.blocked)).toBe(true);
    expect(t.locks.filter((l) => l.kind === 'OFDLCK').every((l) => l.pid === -1)).toBe(true);
    expect(t.locks.find((l) => l.start === 4611686018427387904n)?.end).toBe('EOF');
  });
  it('throws on a garbled line with its number', () => {
    expect(() => parseProcLocks('1: POSIX  ADVISORY  WRITE 1 fe:00:1 0 EOF\n2: garbage\n')).toThrow(/\/proc\/locks:2: .*"2: garbage"/);
  });
});

describe('mountinfo', () => {
  it('maps mount ids to devices and unescapes paths', () => {
    const m = parseMountinfo(fx('mountinfo.txt'), 'mi');
    expect(m.get(26)).toMatchObject({ mountPoint: '/', major: 254, minor: 0, fsType: 'ext4' });
    expect(m.get(62)).toMatchObject({ mountPoint: '/tmp/lm/m p', fsType: 'tmpfs', source: 'lmtmp' });
    expect(splitByMount('/tmp/lm/m p/a\nb', m.get(62)!)).toEqual({ mountPoint: '/tmp/lm/m p', relPath: 'a\nb' });
    expect(splitByMount('/etc/x', m.get(26)!)).toEqual({ mountPoint: '/', relPath: 'etc/x' });
    expect(splitByMount('/tmp/lm/m px', m.get(62)!)).toBeNull();
  });
  it('rejects a line without the separator', () => {
    expect(() => parseMountinfo('26 1 254:0 / / rw,relatime ext4 /dev/vda rw\n', 'mi')).toThrow(/mi:1: malformed/);
  });
});

describe('status, stat, cgroup', () => {
  it('parses Name, Tgid, PPid, NSpid', () => {
    expect(parseStatus(fx('status.txt'), 's')).toEqual({ name: 'python3', tgid: 14474, ppid: 14469, nsPids: [14474] });
    expect(parseStatus('Name:\tsh\nTgid:\t900\nPPid:\t1\nNSpid:\t900\t1\n', 's').nsPids).toEqual([900, 1]);
    expect(() => parseStatus('Name:\tsh\nTgid:\tx\nPPid:\t1\n', 's')).toThrow(/s:2: bad Tgid/);
  });
  it('reads ppid from stat even when comm holds ") "', () => {
    expect(parseStatPpid(fx('stat.txt'), 'st')).toBe(14469);
    expect(parseStatPpid('77 (a) b (c) S 12 77 77 0', 'st')).toBe(12);
    expect(() => parseStatPpid('77 nocomm', 'st')).toThrow(ProcParseError);
  });
  it('prefers the cgroup2 path', () => {
    expect(parseCgroupPath('12:name=systemd:/a\n0::/kubepods/pod1/c1\n')).toBe('/kubepods/pod1/c1');
    expect(parseCgroupPath('12:name=systemd:/a\n3:cpu:/b\n')).toBe('/a');
  });
});

describe('fd link classification', () => {
  it.each([
    ['/data/db', 'path'], ['/data/old (deleted)', 'deleted'], ['socket:[123]', 'socket'], ['pipe:[9]', 'pipe'],
    ['anon_inode:[eventfd]', 'anon_inode'], ['/memfd:buf (deleted)', 'memfd'], ['net:[4026531840]', 'other'],
  ])('%s is %s', (t, kind) => {
    expect(classifyFdTarget(t).kind).toBe(kind);
  });
  it('strips " (deleted)" from the path', () => {
    expect(classifyFdTarget('/a b (deleted)').path).toBe('/a b');
  });
});
