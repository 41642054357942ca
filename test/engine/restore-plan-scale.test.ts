/**
 * Regression test for what the image fuzzer's "huge" family caught: planRestore looked up each
 * fd's process with Array.includes and filtered every fd once per process, so a checkpoint of a
 * pre-fork server with 30,000 workers (each holding fd 3 on one shared description) kept the
 * restore shim busy for seconds before anything was opened (quadratic). The test counts how
 * often the planner reads the fd list instead of timing it: the count is the same on any
 * machine, and it grows with the square of the size when the code is quadratic.
 */
import { describe, expect, it } from 'vitest';
import { planRestore } from '../../src/engine/restore-plan.js';
import type { Checkpoint, FdRecord } from '../../src/image/model.js';

function preforkServer(workers: number): { ckpt: Checkpoint; reads: () => number } {
  let reads = 0;
  const fds: FdRecord[] = Array.from({ length: workers }, (_, i) => ({ pid: 100 + i, fd: 3, fileId: 1, cloexec: false }));
  const counted = new Proxy(fds, {
    get(t, k, r) {
      if (typeof k === 'string' && /^\d+$/.test(k)) reads++;
      return Reflect.get(t, k, r) as unknown;
    },
  });
  const ckpt: Checkpoint = {
    formatVersion: 1, createdAt: '2026-11-26T23:00:00.000Z', method: 'fdinfo', source: { hostname: 'n', kernel: 'k', rootPid: 100 },
    processes: fds.map((d) => ({ pid: d.pid, ppid: 1, nsPid: 1, comm: 'worker', cgroup: '/' })),
    files: [{ id: 1, path: '/data/db', flags: 0o100002, pos: 0n, mntId: 30, dev: { major: 254, minor: 1 }, ino: 5n, mountPoint: '/data', relPath: 'db' }],
    fds: counted,
    locks: [{ kind: 'OFD', type: 'WRITE', start: 0n, end: 'EOF', pid: 100, fd: 3, fileId: 1 }],
    skipped: [],
  };
  return { ckpt, reads: () => reads };
}

describe('restore plan scale (fuzz: quadratic planRestore on 30,000 processes)', () => {
  it('plans a 30,000-worker pre-fork server reading each fd record a bounded number of times', () => {
    const n = 30_000;
    const { ckpt, reads } = preforkServer(n);
    const plan = planRestore(ckpt);
    // the shared description is opened once, at the root process's fd 3, with its lock
    expect(plan.files).toHaveLength(1);
    expect(plan.files[0]!.fds).toEqual([3]);
    expect(plan.locks).toHaveLength(1);
    expect(plan.pids).toHaveLength(n);
    expect(reads()).toBeLessThanOrEqual(10 * n);
  });

  it('selects processes with --pid in linear time too', () => {
    const n = 30_000;
    const { ckpt, reads } = preforkServer(n);
    const wanted = Array.from({ length: n / 2 }, (_, i) => 100 + 2 * i);
    const plan = planRestore(ckpt, { pids: wanted });
    expect(plan.pids).toHaveLength(n / 2);
    expect(plan.primaryPid).toBe(100);
    expect(reads()).toBeLessThanOrEqual(10 * n);
  });
});
