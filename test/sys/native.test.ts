/**
 * liblockmig (native/lockmig.c) on the real kernel:
 *  - lm_place_exec, when a POSIX lock it must re-take is held by another process, puts every fd
 *    back (the runtime's own on its number, the restored file on its temporary one) and the
 *    signal dispositions, and the runtime keeps working (timers, fs, exit code);
 *  - native waits: 300 POSIX F_SETLKW queued at once (300 "->" lines of this process in
 *    /proc/locks), granted to this process when the holder dies;
 *  - lm_read_many reads fdinfo files and links as the kernel shows them to readFileSync/readlinkSync.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { nativeLib, ProcDir, open, close, O_RDWR, O_CLOEXEC } from '../../src/sys/index.js';
import { queuePosixWaits, waitUntilQueued, parseProcLocks } from '../../src/handover/posix.js';
import type { LockRecord } from '../../src/image/model.js';
import { missing, REPO_ROOT } from '../helpers/env.js';
import { startHolder, tmpDir, ofdFree } from '../handover/helpers.js';

const noLib = nativeLib() === null;
if (noLib) {
  process.stderr.write('\n!!!!!!!! SKIPPING "liblockmig": dist/native is not built (no C compiler?) — these tests did NOT run !!!!!!!!\n');
  if (process.env.CI) throw new Error('CI must build liblockmig (gcc, libc6-dev)');
}
const skip = noLib || missing({ root: true, tools: ['unshare', 'python3'] }, 'liblockmig');

const CHILD = String.raw`
import fs from 'node:fs';
import { spawn } from 'node:child_process';
const sys = await import(process.argv[2]);
const file = process.argv[3];
const native = sys.nativeLib();
// a runtime fd the restore would have to replace: the lowest open one above 2
const own = [...Array(30).keys()].slice(3).find((n) => { try { fs.fstatSync(n); return true; } catch { return false; } });
const before = fs.readlinkSync('/proc/self/fd/' + own);
const ignBefore = /SigIgn:\s*(\S+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1];
sys.unshareFiles();
const temp = sys.dupAbove(sys.open(file, sys.O_RDWR | sys.O_CLOEXEC), 500, true);
const copy = sys.dupAbove(own, 600, true);
const f = native.placeAndExec([[temp, own]], [[copy, own]], [{ fd: own, cmd: sys.F_SETLK, lock: { type: sys.F_WRLCK, whence: 0, start: 0n, len: 0n, pid: 0 } }],
  '/bin/true', ['true'], []);
const after = fs.readlinkSync('/proc/self/fd/' + own);
const tempNow = fs.readlinkSync('/proc/self/fd/' + temp);
const ignAfter = /SigIgn:\s*(\S+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1];
// the runtime still works: a timer, an async read, a child process
await new Promise((r) => setTimeout(r, 20));
const text = await fs.promises.readFile(file, 'utf8');
const code = await new Promise((r) => spawn('/bin/true').once('exit', r));
process.stdout.write(JSON.stringify({ f, own, before, after, temp, tempNow, ignBefore, ignAfter, text, code }) + '\n');
`;

describe.skipIf(skip)('liblockmig', () => {
  it('lm_place_exec undoes everything when a POSIX lock it re-takes is held elsewhere; the runtime keeps working', async () => {
    const dir = tmpDir('native');
    const file = path.join(dir, 'db');
    fs.writeFileSync(file, 'data');
    const script = path.join(dir, 'child.mjs');
    fs.writeFileSync(script, CHILD);
    const h = await startHolder([{ path: file, fd: 7, kind: 'POSIX', type: 'WRITE', start: 0, len: 0 }]);
    try {
      const r = spawnSync(process.execPath, [script, path.join(REPO_ROOT, 'dist/src/sys/index.js'), file], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout.trim()) as Record<string, unknown>;
      expect(out.f).toEqual({ step: 'lock', index: 0, errno: 11 }); // EAGAIN: the holder has it
      expect(out.after).toBe(out.before); // the runtime's fd is back on its number
      expect(out.tempNow).toBe(file); // and the file on its temporary one
      expect(out.ignAfter).toBe(out.ignBefore); // SIGPIPE/SIGXFSZ ignored again, as Node.js had them
      expect(out.text).toBe('data');
      expect(out.code).toBe(0);
      // the holder's lock was never taken from it
      expect(ofdFree(file, 0, 4)).toBe(false);
    } finally {
      h.kill();
      await h.exited();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('queues 300 POSIX waits at once on its own threads; the holder\'s death grants all of them to this process', async () => {
    const dir = tmpDir('native-waits');
    const n = 300;
    const specs = Array.from({ length: n }, (_, i) => {
      const p = path.join(dir, `f${i}`);
      fs.writeFileSync(p, 'x');
      return { path: p, fd: 10 + i, kind: 'POSIX' as const, type: 'WRITE' as const, start: 0, len: 0 };
    });
    const h = await startHolder(specs);
    const fds: number[] = [];
    try {
      const items = specs.map((s, i) => {
        const fd = open(s.path, O_RDWR | O_CLOEXEC);
        fds.push(fd);
        const lock: LockRecord = { kind: 'POSIX', type: 'WRITE', start: 0n, end: 'EOF', pid: h.pid, fd: s.fd, fileId: i + 1 };
        return { fd, lock, ino: fs.statSync(s.path, { bigint: true }).ino };
      });
      const waits = queuePosixWaits(items);
      const queued = await waitUntilQueued(waits, 10_000);
      expect(queued.size).toBe(n);
      const inos = new Set(items.map((i) => i.ino));
      const lines = parseProcLocks(fs.readFileSync('/proc/locks', 'utf8')).filter((l) => inos.has(l.ino));
      expect(lines.filter((l) => l.waiter && l.pid === process.pid).length).toBeGreaterThanOrEqual(n);
      h.kill('SIGKILL');
      const outs = await Promise.all(waits.map((w) => w.done));
      expect(outs.every((o) => o.ok)).toBe(true);
      const held = parseProcLocks(fs.readFileSync('/proc/locks', 'utf8')).filter((l) => inos.has(l.ino) && !l.waiter);
      expect(held.length).toBe(n);
      expect(held.every((l) => l.pid === process.pid)).toBe(true);
      expect(ofdFree(specs[0]!.path, 0, 1)).toBe(false);
    } finally {
      for (const fd of fds) close(fd);
      h.kill();
      await h.exited();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lm_read_many reads fdinfo files and fd links exactly as readFileSync and readlinkSync do', () => {
    const names = fs.readdirSync('/proc/self/fd').map(Number).filter((n) => n > 2);
    const info = new ProcDir('/proc/self/fdinfo');
    const links = new ProcDir('/proc/self/fd');
    try {
      const block = info.readFdinfoBlock(names);
      const got = links.readLinks(names);
      names.forEach((n, i) => {
        let text: string | null = null;
        let link: string | null = null;
        try { text = fs.readFileSync(`/proc/self/fdinfo/${n}`, 'latin1'); link = fs.readlinkSync(`/proc/self/fd/${n}`); } catch { /* closed meanwhile */ }
        if (text === null) return;
        const mine = block.text(i);
        // pos/flags/mnt_id/ino are stable between the two reads; later lines (eventfd counters) may not be
        expect(mine?.split('\n').slice(0, 4)).toEqual(text.split('\n').slice(0, 4));
        expect(got[i]?.toString('utf8')).toBe(link);
        if (block.plain![4 * i] === 1) {
          expect(block.plain![4 * i + 1]).toBe(Number(/mnt_id:\t(\d+)/.exec(text)![1]));
          expect(block.plain![4 * i + 2]! >>> 0).toBe(Number(BigInt(/ino:\t(\d+)/.exec(text)![1]!) & 0xffffffffn));
        }
      });
    } finally {
      info.close();
      links.close();
    }
  });
});
