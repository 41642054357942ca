/**
 * POSIX locks re-taken through a queued F_SETLKW on a koffi worker thread: the kernel
 * grants the lock to the *process* (its pid in /proc/locks, conflicts with other processes),
 * and the window between the source's death and the grant is measured and printed.
 */
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { queuePosixWait, queuePosixWaits, queuedInKernel, waitUntilQueued, parseProcLocks } from '../../src/handover/posix.js';
import { open, close, O_RDWR, O_CLOEXEC } from '../../src/sys/libc.js';
import { pidfdOpen } from '../../src/sys/libc.js';
import { pollAsync, POLLIN } from '../../src/sys/socket.js';
import type { LockRecord } from '../../src/image/model.js';
import { missing } from '../helpers/env.js';
import { startHolder, tmpDir, ofdFree } from './helpers.js';

const skip = missing({ root: true, tools: ['unshare', 'python3'] }, 'POSIX re-take through queued F_SETLKW');

describe.skipIf(skip)('POSIX re-take with F_SETLKW queued before the source stops', () => {
  it('is granted to this process when the source dies; the window is measured', async () => {
    const dir = tmpDir('posix');
    const file = path.join(dir, 'posix.db');
    fs.writeFileSync(file, 'x'.repeat(100));
    const h = await startHolder([{ path: file, fd: 5, kind: 'POSIX', type: 'WRITE', start: 10, len: 20 }]);
    const ino = fs.statSync(file, { bigint: true }).ino;
    const fd = open(file, O_RDWR | O_CLOEXEC);
    try {
      const lock: LockRecord = { kind: 'POSIX', type: 'WRITE', start: 10n, end: 29n, pid: h.pid, fd: 5, fileId: 1 };
      const w = queuePosixWait(fd, lock, ino);
      const queued = await waitUntilQueued([w], 5000);
      expect(queued.has(w)).toBe(true);
      // the kernel shows the waiter as this process, blocked on the source's lock
      const before = parseProcLocks(fs.readFileSync('/proc/locks', 'utf8')).filter((l) => l.ino === ino);
      expect(before).toEqual(expect.arrayContaining([
        expect.objectContaining({ waiter: true, kind: 'POSIX', pid: process.pid, start: 10n, end: 29n }),
        expect.objectContaining({ waiter: false, kind: 'POSIX', pid: h.pid }),
      ]));
      const pidfd = pidfdOpen(h.pid);
      const killNs = process.hrtime.bigint();
      h.kill('SIGKILL');
      // pidfd becomes readable when the process has exited (its locks were released just before)
      await pollAsync([{ fd: pidfd, events: POLLIN }], 5000);
      const exitNs = process.hrtime.bigint();
      close(pidfd);
      const out = await w.done;
      expect(out.ok).toBe(true);
      const after = parseProcLocks(fs.readFileSync('/proc/locks', 'utf8')).filter((l) => l.ino === ino);
      expect(after).toEqual([expect.objectContaining({ waiter: false, kind: 'POSIX', type: 'WRITE', pid: process.pid, start: 10n, end: 29n })]);
      // an independent process cannot take it
      expect(ofdFree(file, 10, 20)).toBe(false);
      const us = (a: bigint, b: bigint) => Number(a - b) / 1000;
      process.stdout.write(`\n[POSIX window] SIGKILL→granted ${us(out.acquiredNs, killNs).toFixed(0)} µs; `
        + `source exit seen (pidfd)→granted ${us(out.acquiredNs, exitNs).toFixed(0)} µs (negative: granted before the exit was observed)\n`);
      expect(out.acquiredNs > killNs).toBe(true);
    } finally {
      close(fd);
      h.kill();
      await h.exited();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('queues at most `limit` waits in the kernel at once and chains the rest; all are granted after the stop', async () => {
    const dir = tmpDir('posix');
    const files = [0, 1, 2, 3].map((i) => path.join(dir, `p${i}.db`));
    for (const f of files) fs.writeFileSync(f, 'x');
    const h = await startHolder(files.map((f, i) => ({ path: f, fd: 5 + i, kind: 'POSIX' as const, type: 'WRITE' as const })));
    const fds = files.map((f) => open(f, O_RDWR | O_CLOEXEC));
    try {
      const items = files.map((f, i) => ({
        fd: fds[i]!, ino: fs.statSync(f, { bigint: true }).ino,
        lock: { kind: 'POSIX' as const, type: 'WRITE' as const, start: 0n, end: 'EOF' as const, pid: h.pid, fd: 5 + i, fileId: i + 1 },
      }));
      const waits = queuePosixWaits(items, 2);
      await waitUntilQueued(waits.slice(0, 2), 5000);
      expect(queuedInKernel(waits).size).toBe(2);
      h.kill('SIGKILL');
      const outs = await Promise.all(waits.map((w) => w.done));
      expect(outs.every((o) => o.ok)).toBe(true);
      const mine = parseProcLocks(fs.readFileSync('/proc/locks', 'utf8')).filter((l) => !l.waiter && l.pid === process.pid && items.some((it) => it.ino === l.ino));
      expect(mine).toHaveLength(4);
    } finally {
      fds.forEach((fd) => close(fd));
      h.kill();
      await h.exited();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
