/**
 * The restore shim's behaviour at its edges, on the real kernel: refusals touch nothing,
 * missing files, timeouts that name the holder, waiting for a lock that gets released,
 * exact fd placement (3..20 and 1000, around Node's own fds), stdio of the exec'd program,
 * dry runs, bad images, and descriptions received from a vault (in-process API).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { dumpProcesses } from '../../src/engine/dump.js';
import { restoreLocks } from '../../src/engine/restore.js';
import { writeCheckpoint, type Checkpoint, type FileRecord, type LockRecord } from '../../src/image/index.js';
import { open, closeQuiet, fcntlLock, F_OFD_SETLK, F_WRLCK, O_RDWR, O_CLOEXEC } from '../../src/sys/index.js';
import { EXIT } from '../../src/cli/args.js';
import { CLI, REPO_ROOT, missing } from '../helpers/env.js';
import {
  startHolder, startRestored, runRestore, restoreArgs, fdinfoLocks, fdTarget, procLocks, inoOf, contendFcntl, PYTHON,
} from '../helpers/workload.js';

const skip = missing({ root: true, tools: [PYTHON, 'flock'] }, 'restore shim behaviour');

const cleanups: (() => void)[] = [];
afterEach(() => { for (const c of cleanups.splice(0).reverse()) { try { c(); } catch { /* best effort */ } } });
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-restore-'));
  cleanups.push(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

function fileRec(id: number, p: string): FileRecord {
  const st = fs.existsSync(p) ? fs.statSync(p, { bigint: true }) : null;
  return { id, path: p, flags: O_RDWR, pos: 0n, mntId: 0, dev: { major: 0, minor: 0 }, ino: st?.ino ?? 0n, mountPoint: '/', relPath: p.slice(1) };
}
/** A checkpoint built by hand: one process (pid 100) holding `entries` (fd → path, optional lock). */
function handmade(entries: { fd: number; path: string; lock?: Pick<LockRecord, 'kind' | 'type'> & Partial<Pick<LockRecord, 'start' | 'end'>> }[]): Checkpoint {
  const files = entries.map((e, i) => fileRec(i + 1, e.path));
  return {
    formatVersion: 1, createdAt: new Date().toISOString(), source: { hostname: os.hostname(), kernel: os.release(), rootPid: 100 }, method: 'fdinfo',
    processes: [{ pid: 100, ppid: 1, nsPid: 100, comm: 'app', cgroup: '/' }],
    files,
    fds: entries.map((e, i) => ({ pid: 100, fd: e.fd, fileId: i + 1, cloexec: false })),
    locks: entries.flatMap((e, i) => e.lock ? [{ kind: e.lock.kind, type: e.lock.type, start: e.lock.start ?? 0n, end: e.lock.end ?? 'EOF', pid: 100, fd: e.fd, fileId: i + 1 }] : []),
    skipped: [],
  };
}
function image(ck: Checkpoint): string {
  const dir = path.join(tmp(), 'img');
  writeCheckpoint(dir, ck);
  return dir;
}
function errorLine(stderr: string): Record<string, unknown> {
  const line = stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.level === 'error');
  if (!line) throw new Error(`no JSON error line in stderr: ${stderr}`);
  return line;
}

/**
 * A witness that notices any open() of a file: python3 holds a write LEASE on it. Any open
 * by another process starts a lease break (the kernel sends SIGIO and /proc/locks shows
 * the lease BREAKING/UNLCK), so "nothing opened" is checked by the kernel, not by us.
 */
async function leaseWatch(p: string): Promise<{ broken(): boolean; stop(): void }> {
  const child = spawn(PYTHON, ['-c', `
import fcntl, os, signal, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
signal.signal(signal.SIGIO, lambda *a: (print('BROKEN', flush=True)))
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
print('READY', flush=True)
while True:
    signal.pause()
`, p], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const rl = createInterface({ input: child.stdout! });
  await new Promise<void>((res, rej) => {
    rl.on('line', (l) => { lines.push(l); if (l === 'READY') res(); });
    child.once('exit', (c) => rej(new Error(`lease holder exited ${c}`)));
  });
  child.removeAllListeners('exit');
  const stop = () => { child.kill('SIGKILL'); };
  cleanups.push(stop);
  const ino = inoOf(p);
  return {
    broken: () => lines.includes('BROKEN') || procLocks(ino).some((l) => l.kind === 'LEASE' && l.type !== 'WRITE'),
    stop,
  };
}

describe.skipIf(skip)('restore shim behaviour', () => {
  it('refuses a path outside --allow with exit 4, before opening any file (a lease witness stays unbroken)', async () => {
    const d = tmp();
    const ok = path.join(d, 'ok');
    fs.writeFileSync(ok, 'x');
    const lease = await leaseWatch(ok);
    const img = image(handmade([{ fd: 3, path: ok, lock: { kind: 'OFD', type: 'WRITE' } }, { fd: 4, path: '/etc/passwd', lock: { kind: 'POSIX', type: 'READ' } }]));
    const r = runRestore(img, ['true'], { allow: [d] });
    expect(r.code).toBe(EXIT.REFUSED);
    expect(errorLine(r.stderr)).toMatchObject({ error: 'RestoreRefused', path: '/etc/passwd', rule: 'outside-allowed', exitCode: EXIT.REFUSED });
    expect(lease.broken()).toBe(false);
    expect(procLocks(inoOf(ok)).filter((l) => l.kind !== 'LEASE')).toEqual([]);
    // control: the witness does notice an open (O_NONBLOCK: fail with EWOULDBLOCK instead of waiting for the break)
    expect(() => fs.openSync(ok, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)).toThrow(/EWOULDBLOCK|EAGAIN/);
    for (let i = 0; i < 100 && !lease.broken(); i++) await new Promise((res) => setTimeout(res, 10));
    expect(lease.broken()).toBe(true);
  }, 30_000);

  it('refuses a symlink that leads out of the allowed prefix, and ".." components', () => {
    const d = tmp();
    fs.mkdirSync(path.join(d, 'data'));
    fs.symlinkSync('/etc/passwd', path.join(d, 'data/link'));
    const r1 = runRestore(image(handmade([{ fd: 3, path: path.join(d, 'data/link'), lock: { kind: 'OFD', type: 'READ' } }])), ['true'], { allow: [path.join(d, 'data')] });
    expect(r1.code).toBe(EXIT.REFUSED);
    expect(errorLine(r1.stderr)).toMatchObject({ rule: 'outside-allowed' });
    expect(String(errorLine(r1.stderr).message)).toContain('resolves to /etc/passwd');
    const r2 = runRestore(image(handmade([{ fd: 3, path: `${d}/data/../../etc/passwd` }])), ['true'], { allow: [d] });
    expect(r2.code).toBe(EXIT.REFUSED);
    expect(errorLine(r2.stderr)).toMatchObject({ rule: 'dot-component' });
    // with --root, an absolute symlink is resolved inside the root, and climbing above it is refused
    fs.symlinkSync('../../../../../../etc/passwd', path.join(d, 'data/up'));
    const r3 = runRestore(image(handmade([{ fd: 3, path: '/data/up' }])), ['true'], { root: d, allow: ['/data'] });
    expect(r3.code).toBe(EXIT.REFUSED);
    expect(errorLine(r3.stderr)).toMatchObject({ rule: 'symlink-escape' });
  });

  it('a missing file is a clear error (exit 4), never created', () => {
    const d = tmp();
    const gone = path.join(d, 'gone.db');
    const r = runRestore(image(handmade([{ fd: 3, path: gone, lock: { kind: 'OFD', type: 'WRITE' } }])), ['true']);
    expect(r.code).toBe(EXIT.REFUSED);
    expect(errorLine(r.stderr)).toMatchObject({ rule: 'missing', path: gone });
    expect(fs.existsSync(gone)).toBe(false);
  });

  it('times out naming the holder (pid and command), for an OFD and a POSIX holder', async () => {
    const d = tmp();
    const fo = path.join(d, 'ofd');
    const fp = path.join(d, 'posix');
    const h = await startHolder([
      { op: 'open', name: 'o', path: fo }, { op: 'ofd', fd: 'o', type: 'w' },
      { op: 'open', name: 'p', path: fp }, { op: 'posix', fd: 'p', type: 'w' },
    ]);
    cleanups.push(() => h.kill());
    const pid = h.procs.get('root')!.pid;
    const ofdOnly = handmade([{ fd: 3, path: fo, lock: { kind: 'OFD', type: 'READ' } }]);
    const r1 = runRestore(image(ofdOnly), ['true'], { timeoutS: 0.3 });
    expect(r1.code).toBe(EXIT.LOCK_TIMEOUT);
    const e1 = errorLine(r1.stderr);
    expect(e1).toMatchObject({ error: 'LockTimeout', path: fo });
    expect(e1.holders).toEqual([expect.objectContaining({ pid, comm: expect.stringMatching(/python/), kind: 'OFDLCK', type: 'WRITE' })]);
    expect(String(e1.message)).toContain(`pid ${pid} (python`);
    const r2 = runRestore(image(handmade([{ fd: 3, path: fp, lock: { kind: 'POSIX', type: 'WRITE', start: 5n, end: 6n } }])), ['true'], { timeoutS: 0 });
    expect(r2.code).toBe(EXIT.LOCK_TIMEOUT);
    expect(errorLine(r2.stderr).holders).toEqual([expect.objectContaining({ pid, kind: 'POSIX' })]);
    // the holder still has its locks: the failed restore released nothing of theirs
    expect(contendFcntl('ofd', 'r', fo)).toBe('busy');
  });

  it('waits for a lock that is released during --timeout, then holds it', async () => {
    const f = path.join(tmp(), 'later');
    const h = await startHolder([{ op: 'open', name: 'f', path: f }, { op: 'flock', fd: 'f', type: 'w' }]);
    cleanups.push(() => h.kill());
    const img = image(handmade([{ fd: 3, path: f, lock: { kind: 'FLOCK', type: 'WRITE' } }]));
    // release the holder only once the shim says it is waiting
    const r = await startRestored(img, { timeoutS: 20, onStderr: (all) => { if (all.includes('waiting for locks held elsewhere')) h.kill(); } });
    cleanups.push(() => r.kill());
    expect(fdinfoLocks(r.pid, 3).some((l) => l.kind === 'FLOCK' && l.type === 'WRITE')).toBe(true);
    expect(r.stderr()).toMatch(/waiting for locks held elsewhere/);
  });

  it('places fds exactly at 3..20 and 1000 although Node.js itself uses low fds, and leaks nothing else', async () => {
    const d = tmp();
    const nums = [...Array.from({ length: 18 }, (_, i) => i + 3), 1000];
    const entries = nums.map((fd) => {
      const p = path.join(d, `f${fd}`);
      fs.writeFileSync(p, '');
      return { fd, path: p, lock: fd % 3 === 0 ? { kind: 'OFD' as const, type: 'WRITE' as const } : fd % 3 === 1 ? { kind: 'POSIX' as const, type: 'READ' as const } : { kind: 'FLOCK' as const, type: 'READ' as const } };
    });
    const r = await startRestored(image(handmade(entries)));
    cleanups.push(() => r.kill());
    const open = fs.readdirSync(`/proc/${r.pid}/fd`).map(Number).sort((a, b) => a - b);
    expect(open).toEqual(expect.arrayContaining([0, 1, 2, ...nums]));
    // anything else must have been inherited from this test process (same number, same file),
    // never a Node.js internal (eventpoll, eventfd, pipe) nor a /dev/null placeholder of the shim
    const extra = open.filter((n) => n > 2 && !nums.includes(n));
    for (const n of extra) expect(fdTarget(r.pid, n), `unexpected fd ${n}`).toBe(fs.readlinkSync(`/proc/self/fd/${n}`));
    for (const e of entries) {
      expect(fdTarget(r.pid, e.fd)).toBe(e.path);
      const kind = e.lock.kind === 'OFD' ? 'OFDLCK' : e.lock.kind;
      expect(fdinfoLocks(r.pid, e.fd).map((l) => `${l.kind}:${l.type}`)).toContain(`${kind}:${e.lock.type}`);
      // not close-on-exec any more (flags as the kernel reports them)
      const flags = /flags:\s+([0-7]+)/.exec(fs.readFileSync(`/proc/${r.pid}/fdinfo/${e.fd}`, 'utf8'))![1]!;
      expect(parseInt(flags, 8) & O_CLOEXEC).toBe(0);
    }
    expect(r.report.version).toBe('1');
  });

  it('the exec\'d program keeps stdout and stderr, and its exit code', () => {
    const f = path.join(tmp(), 'out');
    fs.writeFileSync(f, '');
    const r = runRestore(image(handmade([{ fd: 5, path: f, lock: { kind: 'OFD', type: 'WRITE' } }])),
      ['sh', '-c', 'echo "out-marker fds=$LOCKMIG_FDS"; echo err-marker >&2; exit 7']);
    expect(r.code).toBe(7);
    expect(r.stdout).toBe(`out-marker fds=5:OFD:WRITE:0:EOF:${f}\n`);
    expect(r.stderr).toContain('err-marker');
  });

  it('--dry-run prints the plan and opens nothing; a corrupt image exits 5; a missing command exits 127', () => {
    const f = path.join(tmp(), 'dry');
    fs.writeFileSync(f, '');
    const img = image(handmade([{ fd: 9, path: f, lock: { kind: 'OFD', type: 'WRITE', start: 1n, end: 2n } }]));
    const dry = runRestore(img, [], { env: {} });
    // (runRestore always passes a command separator; --dry-run needs no command)
    expect(dry.code).toBe(EXIT.USAGE);
    const r = spawnCli([...restoreArgs(img), '--dry-run']);
    expect(r.status).toBe(0);
    const plan = JSON.parse(r.stdout) as { fds: { fd: number; path: string }[]; locks: { kind: string; start: string; end: string }[] };
    expect(plan.fds).toEqual([expect.objectContaining({ fd: 9, path: f })]);
    expect(plan.locks).toEqual([expect.objectContaining({ kind: 'OFD', start: '1', end: '2' })]);
    expect(procLocks(inoOf(f))).toEqual([]);
    fs.writeFileSync(path.join(img, 'filelocks.img'), Buffer.from([1, 2, 3]));
    expect(runRestore(img, ['true']).code).toBe(EXIT.BAD_IMAGE);
    const img2 = image(handmade([{ fd: 9, path: f }]));
    expect(runRestore(img2, ['/nonexistent/program']).code).toBe(127);
  });

  it('a LOCKMIG_FDS list too large for the environment (E2BIG) is handed over in a memfd named by LOCKMIG_FDS_FD', () => {
    const d = path.join(tmp(), 'x'.repeat(120));
    fs.mkdirSync(d);
    const entries = Array.from({ length: 700 }, (_, i) => {
      const p = path.join(d, `${'long-name-'.repeat(10)}${i}`);
      fs.writeFileSync(p, '');
      return { fd: 3 + i, path: p, lock: { kind: 'OFD' as const, type: (i % 2 ? 'READ' : 'WRITE') as 'READ' | 'WRITE' } };
    });
    const envfds = path.join(REPO_ROOT, 'dist/src/engine/envfds.js');
    const r = runRestore(image(handmade(entries)), [process.execPath, '--input-type=module', '-e',
      `import { readInheritedFds } from ${JSON.stringify(envfds)}; const l = readInheritedFds();
       console.log(JSON.stringify({ n: l.length, env: process.env.LOCKMIG_FDS ?? null, fd: process.env.LOCKMIG_FDS_FD, last: l[l.length - 1] }, (k, v) => typeof v === 'bigint' ? String(v) : v));`]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { n: number; env: string | null; fd: string; last: { fd: number; path: string; type: string } };
    expect(out.env).toBeNull();
    expect(Number(out.fd)).toBeGreaterThan(2);
    expect(out.n).toBe(700);
    expect(out.last).toMatchObject({ fd: 702, path: entries[699]!.path, type: 'READ' });
  });

  it('in-process: descriptions received from a vault are used as they are (OFD lock already held), POSIX locks re-taken', async () => {
    const d = tmp();
    const fo = path.join(d, 'vault-ofd');
    const fp = path.join(d, 'vault-posix');
    fs.writeFileSync(fo, '');
    fs.writeFileSync(fp, '');
    // what the vault would hand over: a description that already carries the OFD lock
    const got = open(fo, O_RDWR | O_CLOEXEC);
    fcntlLock(got, F_OFD_SETLK, { type: F_WRLCK, whence: 0, start: 0n, len: 0n, pid: 0 });
    const ck = handmade([{ fd: 3, path: fo, lock: { kind: 'OFD', type: 'WRITE' } }, { fd: 4, path: fp, lock: { kind: 'POSIX', type: 'WRITE' } }]);
    const res = await restoreLocks(ck, { allow: [d], timeoutMs: 1000, received: new Map([[1, got]]), onConflict: 'remap' });
    cleanups.push(() => { for (const f of res.fds) closeQuiet(f.fd); });
    expect(res.locks.map((l) => [l.kind, l.how])).toEqual([['OFD', 'held'], ['POSIX', 'taken']]);
    const ofdFd = res.fds.find((f) => f.path === fo)!;
    expect(ofdFd.received).toBe(true);
    expect(fdinfoLocks(process.pid, ofdFd.fd).some((l) => l.kind === 'OFDLCK' && l.type === 'WRITE')).toBe(true);
    expect(contendFcntl('ofd', 'r', fo)).toBe('busy');
    expect(contendFcntl('posix', 'r', fp)).toBe('busy');
    // the env var names the numbers actually used (remapped away from Node's own fds)
    expect(res.envValue.split(';').map((e) => Number(e.split(':')[0]))).toEqual(res.fds.map((f) => f.fd).sort((a, b) => a - b));
  });
});

function spawnCli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
}
