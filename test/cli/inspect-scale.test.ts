/**
 * Regression tests for `lockmig inspect` on large checkpoints. The image fuzzer's "huge" family
 * caught renderCheckpoint filtering every fd once per file (quadratic: seconds for 30,000 files);
 * reading its column widths with Math.max(...rows) also threw "Maximum call stack size exceeded"
 * from about 150,000 locks. Work is counted (reads of the fd list), not timed.
 */
import { describe, expect, it } from 'vitest';
import { renderCheckpoint } from '../../src/cli/commands/inspect.js';
import type { Checkpoint, FdRecord, FileRecord, LockRecord } from '../../src/image/model.js';

function big(files: number, locks: number): { ckpt: Checkpoint; reads: () => number } {
  let reads = 0;
  const fileRecs: FileRecord[] = Array.from({ length: files }, (_, i) => ({
    id: i + 1, path: `/data/f${i}`, flags: 0o100002, pos: 0n, mntId: 30, dev: { major: 254, minor: 1 }, ino: BigInt(i + 10), mountPoint: '/data', relPath: `f${i}`,
  }));
  // every file has two fds (a dup), so every file is a shared description
  const fds: FdRecord[] = fileRecs.flatMap((f, i) => [{ pid: 10, fd: 3 + 2 * i, fileId: f.id, cloexec: false }, { pid: 10, fd: 4 + 2 * i, fileId: f.id, cloexec: false }]);
  const lockRecs: LockRecord[] = Array.from({ length: locks }, (_, i) => ({ kind: 'POSIX', type: 'READ', start: BigInt(2 * i), end: BigInt(2 * i), pid: 10, fd: 3, fileId: 1 }));
  const counted = new Proxy(fds, {
    get(t, k, r) {
      if (typeof k === 'string' && /^\d+$/.test(k)) reads++;
      return Reflect.get(t, k, r) as unknown;
    },
  });
  return {
    ckpt: {
      formatVersion: 1, createdAt: '2026-11-26T23:00:00.000Z', method: 'fdinfo', source: { hostname: 'n', kernel: 'k', rootPid: 10 },
      processes: [{ pid: 10, ppid: 1, nsPid: 1, comm: 'db', cgroup: '/' }], files: fileRecs, fds: counted, locks: lockRecs, skipped: [],
    },
    reads: () => reads,
  };
}

describe('lockmig inspect on large checkpoints', () => {
  it('lists 30,000 shared descriptions reading each fd record a bounded number of times (fuzz: quadratic render)', () => {
    const { ckpt, reads } = big(30_000, 1);
    const out = renderCheckpoint(ckpt);
    expect(out).toContain('30000 files, 60000 fds, 1 locks');
    expect(out).toContain('"/data/f29999": pid 10 fd 60001, pid 10 fd 60002');
    expect(reads()).toBeLessThanOrEqual(5 * 60_000);
  });

  it('renders a table of 200,000 locks without overflowing the call stack', () => {
    const { ckpt } = big(1, 200_000);
    const out = renderCheckpoint(ckpt);
    expect(out.split('\n').filter((l) => l.startsWith('POSIX')).length).toBe(200_000);
    expect(out).toContain('POSIX  READ  399998 399998  10   3   "/data/f0"');
  });
});
