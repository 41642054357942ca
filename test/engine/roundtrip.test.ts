/**
 * Dump → kill → restore round trips on real processes, re-creating CRIU's zdtm lock cases
 * (test/zdtm/static/file_locks00–08) plus CRIU's known gaps, 64-bit offsets, another mount
 * namespace, a hostile file name, the /proc/locks fallback and a real sqlite3 database.
 *
 * The source is a python3 process tree; the restored application is another python3
 * program started through the real CLI (`node dist/src/cli/main.js restore … -- python3`).
 * Every case checks the restored state three independent ways:
 *   1. the restored process's own /proc/<pid>/fdinfo lock: lines (at the recorded fd numbers),
 *   2. the kernel's global table (/proc/locks, and lslocks --json for POSIX/flock owners),
 *   3. an independent contender that must be refused (flock -n, python3 fcntl, sqlite3).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { dumpProcesses } from '../../src/engine/dump.js';
import { writeCheckpoint, type Checkpoint } from '../../src/image/index.js';
import { parseFds } from '../../src/engine/envfds.js';
import { missing } from '../helpers/env.js';
import {
  startHolder, startRestored, fdinfoLocks, fdTarget, procLocks, inoOf, lslocks, contendFcntl, contendFlock,
  sqliteWrite, descendants, waitGone, PYTHON, type Holder, type HolderAction, type Restored,
} from '../helpers/workload.js';

const skip = missing({ root: true, tools: ['lslocks', 'flock', 'unshare', 'sqlite3', PYTHON] }, 'restore round trips');

const cleanups: (() => void)[] = [];
afterEach(() => { for (const c of cleanups.splice(0).reverse()) { try { c(); } catch { /* best effort */ } } });

function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-rt-'));
  cleanups.push(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Host pids of the holder's processes (the holder itself reports pids of its own namespace). */
function hostPids(h: Holder): number[] {
  const all = [h.child.pid!, ...descendants(h.child.pid!)];
  return all.filter((p) => { try { return fs.readFileSync(`/proc/${p}/comm`, 'utf8').startsWith('python'); } catch { return false; } });
}

interface Trip { ckpt: Checkpoint; image: string; restored: Restored; rootFds: Record<string, number> }

/** Take locks in a source tree, dump it, kill it, restore into the python app. */
async function roundTrip(actions: HolderAction[], opts: { wrap?: readonly string[]; root?: string; allow?: string[]; env?: Record<string, string> } = {}): Promise<Trip> {
  const h = await startHolder(actions, { wrap: opts.wrap });
  const pids = hostPids(h);
  // kill by HOST pid: inside a pid namespace the holder reports namespace pids (1, 2, …)
  const killSource = () => { for (const p of pids) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } } h.child.kill('SIGKILL'); };
  cleanups.push(killSource);
  const rootPid = pids[0]!;
  const saved = { ...process.env };
  Object.assign(process.env, opts.env ?? {});
  let ckpt: Checkpoint;
  try { ckpt = dumpProcesses({ pids: [rootPid], tree: true }); } finally { for (const k of Object.keys(opts.env ?? {})) { if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k]; } }
  const image = path.join(tmp(), 'img');
  writeCheckpoint(image, ckpt);
  killSource();
  for (const p of pids) await waitGone(p);
  const restored = await startRestored(image, { root: opts.root, allow: opts.allow, timeoutS: 5 });
  cleanups.push(() => restored.kill());
  return { ckpt, image, restored, rootFds: { ...h.procs.get('root')!.fds } };
}

type Want = { kind: 'POSIX' | 'FLOCK' | 'OFDLCK'; type: 'READ' | 'WRITE'; start?: bigint; end?: bigint | 'EOF' };
/** Witnesses 1 and 2 for one restored fd. */
function expectHeld(r: Restored, fd: number, file: string, want: Want): void {
  const start = want.start ?? 0n;
  const end = want.end ?? 'EOF';
  // 1. the restored process's own fd, at the recorded number, on the same file
  expect(fdTarget(r.pid, fd)).toBe(file);
  const mine = fdinfoLocks(r.pid, fd).filter((l) => l.kind === want.kind && l.type === want.type && l.start === start && l.end === end);
  expect(mine, `fdinfo of pid ${r.pid} fd ${fd}: ${JSON.stringify(fdinfoLocks(r.pid, fd), (_k, v: unknown) => typeof v === 'bigint' ? v.toString() : v)}`).toHaveLength(1);
  // 2. the kernel's global lock table, owned by the restored process (OFD shows pid -1)
  const global = procLocks(inoOf(file)).filter((l) => l.kind === want.kind && l.type === want.type && l.start === start && l.end === end);
  expect(global.length).toBeGreaterThanOrEqual(1);
  if (want.kind !== 'OFDLCK') expect(global.map((l) => l.pid)).toContain(r.pid);
  else expect(global.every((l) => l.pid === -1)).toBe(true);
}

function lslocksOf(pid: number) {
  return lslocks().filter((l) => l.pid === pid);
}

describe.skipIf(skip)('restore round trips (zdtm file_locks00–08 and more)', () => {
  it('file_locks00: POSIX read and write locks come back on the same fds, owned by the new process', async () => {
    const d = tmp();
    const fw = path.join(d, 'posix-w');
    const fr = path.join(d, 'posix-r');
    const t = await roundTrip([
      { op: 'open', name: 'w', path: fw }, { op: 'posix', fd: 'w', type: 'w' },
      { op: 'open', name: 'r', path: fr, mode: 'ro' }, { op: 'posix', fd: 'r', type: 'r' },
    ]);
    expectHeld(t.restored, t.rootFds.w!, fw, { kind: 'POSIX', type: 'WRITE' });
    expectHeld(t.restored, t.rootFds.r!, fr, { kind: 'POSIX', type: 'READ' });
    const ls = lslocksOf(t.restored.pid);
    expect(ls.find((l) => l.path === fw)).toMatchObject({ type: 'POSIX', mode: 'WRITE' });
    expect(ls.find((l) => l.path === fr)).toMatchObject({ type: 'POSIX', mode: 'READ' });
    expect(contendFcntl('posix', 'w', fw)).toBe('busy');
    expect(contendFcntl('posix', 'r', fw)).toBe('busy');
    expect(contendFcntl('posix', 'w', fr)).toBe('busy');
    expect(contendFcntl('posix', 'r', fr)).toBe('acquired'); // a READ lock stays shareable
  });

  it('file_locks01: flock shared + exclusive mixed with a POSIX lock', async () => {
    const d = tmp();
    const [fsh, fex, fpx] = ['sh', 'ex', 'px'].map((n) => path.join(d, n)) as [string, string, string];
    const t = await roundTrip([
      { op: 'open', name: 'sh', path: fsh }, { op: 'flock', fd: 'sh', type: 'r' },
      { op: 'open', name: 'ex', path: fex }, { op: 'flock', fd: 'ex', type: 'w' },
      { op: 'open', name: 'px', path: fpx }, { op: 'posix', fd: 'px', type: 'w', start: 10n, len: 20n },
    ]);
    expectHeld(t.restored, t.rootFds.sh!, fsh, { kind: 'FLOCK', type: 'READ' });
    expectHeld(t.restored, t.rootFds.ex!, fex, { kind: 'FLOCK', type: 'WRITE' });
    expectHeld(t.restored, t.rootFds.px!, fpx, { kind: 'POSIX', type: 'WRITE', start: 10n, end: 29n });
    // lslocks (util-linux) sees the new process as the owner, with the right modes
    const ls = lslocksOf(t.restored.pid).filter((l) => l.type === 'FLOCK');
    expect([...new Set(ls.filter((l) => l.path === fsh).map((l) => l.mode))]).toEqual(['READ']);
    expect([...new Set(ls.filter((l) => l.path === fex).map((l) => l.mode))]).toEqual(['WRITE']);
    expect(contendFlock('w', fsh)).toBe('busy');
    expect(contendFlock('r', fsh)).toBe('acquired');
    expect(contendFlock('r', fex)).toBe('busy');
    expect(contendFcntl('posix', 'w', fpx, 15n, 1n)).toBe('busy');
    expect(contendFcntl('posix', 'w', fpx, 30n, 1n)).toBe('acquired'); // outside the range
  });

  it('file_locks02: a flock shared by parent and child after fork is restored once', async () => {
    const f = path.join(tmp(), 'forked');
    const t = await roundTrip([
      { op: 'open', name: 'f', path: f }, { op: 'flock', fd: 'f', type: 'w' },
      { op: 'fork', role: 'child', actions: [] },
    ]);
    expectHeld(t.restored, t.rootFds.f!, f, { kind: 'FLOCK', type: 'WRITE' });
    expect(procLocks(inoOf(f)).filter((l) => l.kind === 'FLOCK')).toHaveLength(1);
    expect(contendFlock('r', f)).toBe('busy');
  });

  it('file_locks03: shared flocks on two descriptions (parent and child each opened the file)', async () => {
    const f = path.join(tmp(), 'two-sh');
    const t = await roundTrip([
      { op: 'open', name: 'a', path: f }, { op: 'flock', fd: 'a', type: 'r' },
      { op: 'fork', role: 'child', actions: [{ op: 'open', name: 'b', path: f }, { op: 'flock', fd: 'b', type: 'r' }] },
    ]);
    expectHeld(t.restored, t.rootFds.a!, f, { kind: 'FLOCK', type: 'READ' });
    // the child's description comes back too, at its recorded number or the next free one
    const entries = parseFds(t.restored.report.fds).filter((e) => e.kind === 'FLOCK');
    expect(entries).toHaveLength(2);
    expect(new Set(entries.map((e) => e.fd)).size).toBe(2);
    for (const e of entries) expect(fdinfoLocks(t.restored.pid, e.fd).some((l) => l.kind === 'FLOCK' && l.type === 'READ')).toBe(true);
    expect(procLocks(inoOf(f)).filter((l) => l.kind === 'FLOCK' && l.pid === t.restored.pid)).toHaveLength(2);
    expect(contendFlock('w', f)).toBe('busy');
  });

  it('file_locks04: a flock on a dup()ed fd keeps both fd numbers on one description', async () => {
    const f = path.join(tmp(), 'dup');
    const t = await roundTrip([
      { op: 'open', name: 'f', path: f }, { op: 'dup', fd: 'f', as: 'g', to: 20 }, { op: 'flock', fd: 'g', type: 'w' },
    ]);
    expectHeld(t.restored, t.rootFds.f!, f, { kind: 'FLOCK', type: 'WRITE' });
    expectHeld(t.restored, 20, f, { kind: 'FLOCK', type: 'WRITE' });
    expect(procLocks(inoOf(f)).filter((l) => l.kind === 'FLOCK')).toHaveLength(1); // one description, one lock
    expect(contendFlock('r', f)).toBe('busy');
  });

  it('file_locks05: a flock inherited by a child whose parent closed its fd', async () => {
    const f = path.join(tmp(), 'orphaned');
    const t = await roundTrip([
      { op: 'open', name: 'f', path: f }, { op: 'flock', fd: 'f', type: 'w' },
      { op: 'fork', role: 'child', actions: [] },
      { op: 'close', fd: 'f' },
    ]);
    const e = parseFds(t.restored.report.fds).find((x) => x.kind === 'FLOCK');
    expect(e?.path).toBe(f);
    expectHeld(t.restored, e!.fd, f, { kind: 'FLOCK', type: 'WRITE' });
    expect(contendFlock('r', f)).toBe('busy');
  });

  it('file_locks06: four overlapping OFD read locks on four descriptions', async () => {
    const f = path.join(tmp(), 'ofd-read');
    const starts = [0n, 10n, 0n, 70n];
    const lens = [20n, 30n, 100n, 200n];
    const acts: HolderAction[] = [];
    starts.forEach((s, i) => acts.push({ op: 'open', name: `f${i}`, path: f, mode: 'ro' }, { op: 'ofd', fd: `f${i}`, type: 'r', start: s, len: lens[i]! }));
    const t = await roundTrip(acts);
    starts.forEach((s, i) => expectHeld(t.restored, t.rootFds[`f${i}`]!, f, { kind: 'OFDLCK', type: 'READ', start: s, end: s + lens[i]! - 1n }));
    expect(procLocks(inoOf(f)).filter((l) => l.kind === 'OFDLCK')).toHaveLength(4);
    expect(contendFcntl('ofd', 'w', f, 5n, 1n)).toBe('busy');
    expect(contendFcntl('ofd', 'w', f, 200n, 10n)).toBe('busy');
    expect(contendFcntl('ofd', 'w', f, 300n, 10n)).toBe('acquired'); // past every range
    expect(contendFcntl('ofd', 'r', f, 0n, 0n)).toBe('acquired');
  });

  it('file_locks07: OFD locks of both types on different fds and ranges', async () => {
    const f = path.join(tmp(), 'ofd-mixed');
    const t = await roundTrip([
      { op: 'open', name: 'a', path: f }, { op: 'ofd', fd: 'a', type: 'w', start: 0n, len: 10n },
      { op: 'open', name: 'b', path: f }, { op: 'ofd', fd: 'b', type: 'r', start: 100n, len: 100n },
      { op: 'open', name: 'c', path: f }, { op: 'ofd', fd: 'c', type: 'w', start: 1000n, len: 0n },
    ]);
    expectHeld(t.restored, t.rootFds.a!, f, { kind: 'OFDLCK', type: 'WRITE', start: 0n, end: 9n });
    expectHeld(t.restored, t.rootFds.b!, f, { kind: 'OFDLCK', type: 'READ', start: 100n, end: 199n });
    expectHeld(t.restored, t.rootFds.c!, f, { kind: 'OFDLCK', type: 'WRITE', start: 1000n, end: 'EOF' });
    expect(contendFcntl('ofd', 'r', f, 0n, 1n)).toBe('busy');
    expect(contendFcntl('ofd', 'r', f, 150n, 1n)).toBe('acquired');
    expect(contendFcntl('ofd', 'w', f, 150n, 1n)).toBe('busy');
    expect(contendFcntl('posix', 'r', f, 5000n, 1n)).toBe('busy');
  });

  it('file_locks08: an OFD lock inherited across fork is restored once, still WRITE', async () => {
    const f = path.join(tmp(), 'ofd-fork');
    const t = await roundTrip([
      { op: 'open', name: 'f', path: f }, { op: 'ofd', fd: 'f', type: 'w' },
      { op: 'fork', role: 'child', actions: [] },
    ]);
    expectHeld(t.restored, t.rootFds.f!, f, { kind: 'OFDLCK', type: 'WRITE' });
    expect(procLocks(inoOf(f)).filter((l) => l.kind === 'OFDLCK')).toHaveLength(1);
    expect(contendFcntl('ofd', 'r', f)).toBe('busy');
  });

  it('CRIU gap: a POSIX lock a child took through a description inherited from its parent is not lost', async () => {
    const f = path.join(tmp(), 'child-posix');
    const t = await roundTrip([
      { op: 'open', name: 'f', path: f },
      { op: 'fork', role: 'child', actions: [{ op: 'posix', fd: 'f', type: 'w', start: 0n, len: 100n }] },
    ]);
    expect(t.ckpt.locks.filter((l) => l.kind === 'POSIX')).toHaveLength(1);
    expectHeld(t.restored, t.rootFds.f!, f, { kind: 'POSIX', type: 'WRITE', start: 0n, end: 99n });
    expect(lslocksOf(t.restored.pid).some((l) => l.type === 'POSIX' && l.path === f)).toBe(true);
    expect(contendFcntl('posix', 'r', f, 50n, 1n)).toBe('busy');
  });

  it('CRIU gap: a WRITE OFD lock stays WRITE (a reader must still be refused)', async () => {
    const f = path.join(tmp(), 'ofd-stays-write');
    const t = await roundTrip([{ op: 'open', name: 'f', path: f }, { op: 'ofd', fd: 'f', type: 'w', start: 0n, len: 4096n }]);
    expectHeld(t.restored, t.rootFds.f!, f, { kind: 'OFDLCK', type: 'WRITE', start: 0n, end: 4095n });
    expect(contendFcntl('ofd', 'r', f, 0n, 1n)).toBe('busy');
    expect(contendFcntl('posix', 'r', f, 4095n, 1n)).toBe('busy');
  });

  it('64-bit offsets survive bit for bit (2^62 + 1 start, 2^62 length)', async () => {
    const d = tmp();
    const fo = path.join(d, 'big-ofd');
    const fp = path.join(d, 'big-posix');
    const s = (1n << 62n) + 1n; // not representable as a JS number
    const t = await roundTrip([
      { op: 'open', name: 'o', path: fo }, { op: 'ofd', fd: 'o', type: 'w', start: 1n << 62n, len: 1n << 62n },
      { op: 'open', name: 'p', path: fp }, { op: 'posix', fd: 'p', type: 'w', start: s, len: 10n },
    ]);
    // 2^62 + 2^62 - 1 = 2^63 - 1 = OFFSET_MAX, which the kernel prints as EOF
    expectHeld(t.restored, t.rootFds.o!, fo, { kind: 'OFDLCK', type: 'WRITE', start: 1n << 62n, end: 'EOF' });
    expectHeld(t.restored, t.rootFds.p!, fp, { kind: 'POSIX', type: 'WRITE', start: s, end: s + 9n });
    expect(parseFds(t.restored.report.fds).find((e) => e.path === fp)).toMatchObject({ kind: 'POSIX', start: s, end: s + 9n });
    expect(contendFcntl('posix', 'w', fp, s + 9n, 1n)).toBe('busy');
    expect(contendFcntl('posix', 'w', fp, s + 10n, 1n)).toBe('acquired');
    expect(contendFcntl('posix', 'w', fp, s - 1n, 1n)).toBe('acquired');
    expect(contendFcntl('ofd', 'r', fo, (1n << 62n) + 5n, 1n)).toBe('busy');
  });

  it('locks taken in another mount namespace are restored through --root', async () => {
    const d = tmp();
    const hostRoot = path.join(d, 'root');
    fs.mkdirSync(path.join(hostRoot, 'mnt'), { recursive: true });
    // inside the namespace the volume is bind-mounted at /mnt; the host sees it under hostRoot/mnt
    const wrap = ['unshare', '--mount', '--pid', '--fork', '--kill-child', '--mount-proc', 'sh', '-c',
      'mount --make-rprivate / && mount --bind "$0" /mnt && exec "$@"', path.join(hostRoot, 'mnt')];
    const t = await roundTrip([
      { op: 'open', name: 'o', path: '/mnt/ofd' }, { op: 'ofd', fd: 'o', type: 'w' },
      { op: 'open', name: 'k', path: '/mnt/flock' }, { op: 'flock', fd: 'k', type: 'w' },
    ], { wrap, root: hostRoot, allow: ['/mnt'] });
    expect(t.ckpt.files.map((f) => f.path).sort()).toEqual(['/mnt/flock', '/mnt/ofd']);
    const ofd = path.join(hostRoot, 'mnt/ofd');
    const flk = path.join(hostRoot, 'mnt/flock');
    expectHeld(t.restored, t.rootFds.o!, ofd, { kind: 'OFDLCK', type: 'WRITE' });
    expectHeld(t.restored, t.rootFds.k!, flk, { kind: 'FLOCK', type: 'WRITE' });
    expect(parseFds(t.restored.report.fds).map((e) => e.path).sort()).toEqual(['/mnt/flock', '/mnt/ofd']);
    expect(contendFcntl('ofd', 'r', ofd)).toBe('busy');
    expect(contendFlock('r', flk)).toBe('busy');
  });

  it('a path with spaces and a newline round-trips (and LOCKMIG_FDS encodes it)', async () => {
    const f = path.join(tmp(), 'my data\nfile; x:y%.lock');
    const t = await roundTrip([{ op: 'open', name: 'f', path: f }, { op: 'ofd', fd: 'f', type: 'w' }]);
    expectHeld(t.restored, t.rootFds.f!, f, { kind: 'OFDLCK', type: 'WRITE' });
    expect(t.restored.report.fds).not.toMatch(/[\n ]/);
    expect(parseFds(t.restored.report.fds)).toEqual([{ fd: t.rootFds.f, kind: 'OFD', type: 'WRITE', start: 0n, end: 'EOF', path: f }]);
    expect(contendFcntl('ofd', 'w', f)).toBe('busy');
  });

  it('the /proc/locks fallback (LOCKMIG_FORCE_PROC_LOCKS=1) dumps locks that restore the same way', async () => {
    const d = tmp();
    const [fo, fp, fl] = ['o', 'p', 'l'].map((n) => path.join(d, n)) as [string, string, string];
    const t = await roundTrip([
      { op: 'open', name: 'o', path: fo }, { op: 'ofd', fd: 'o', type: 'w', start: 5n, len: 5n },
      { op: 'open', name: 'p', path: fp }, { op: 'posix', fd: 'p', type: 'r' },
      { op: 'open', name: 'l', path: fl }, { op: 'flock', fd: 'l', type: 'w' },
    ], { env: { LOCKMIG_FORCE_PROC_LOCKS: '1' } });
    expect(t.ckpt.method).toBe('proc-locks');
    expectHeld(t.restored, t.rootFds.o!, fo, { kind: 'OFDLCK', type: 'WRITE', start: 5n, end: 9n });
    expectHeld(t.restored, t.rootFds.p!, fp, { kind: 'POSIX', type: 'READ' });
    expectHeld(t.restored, t.rootFds.l!, fl, { kind: 'FLOCK', type: 'WRITE' });
    expect(contendFcntl('ofd', 'r', fo, 7n, 1n)).toBe('busy');
    expect(contendFcntl('posix', 'w', fp)).toBe('busy');
    expect(contendFlock('r', fl)).toBe('busy');
  });

  it('sqlite3: the lock of a database in an EXCLUSIVE transaction moves, and the sqlite3 CLI gets "database is locked"', async () => {
    const db = path.join(tmp(), 'app.db');
    fs.rmSync(db, { force: true });
    const init = sqliteWrite(db, 'create table t(x); insert into t values (1);');
    expect(init.status).toBe(0);
    const src = spawn(PYTHON, ['-c', `
import sqlite3, os, sys, signal
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute('BEGIN EXCLUSIVE')
con.execute("insert into t values ('source')")
print(os.getpid(), flush=True)
signal.pause()
`, db], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(() => src.kill('SIGKILL'));
    const pid = Number(await new Promise<string>((res) => createInterface({ input: src.stdout! }).once('line', res)));
    expect(sqliteWrite(db).stderr).toMatch(/database is locked/); // sanity: the source holds it
    const ckpt = dumpProcesses({ pids: [pid] });
    expect(ckpt.locks.some((l) => l.kind === 'POSIX' && l.type === 'WRITE')).toBe(true);
    const image = path.join(tmp(), 'img');
    writeCheckpoint(image, ckpt);
    src.kill('SIGKILL');
    await waitGone(pid);
    const r = await startRestored(image, { timeoutS: 5 });
    cleanups.push(() => r.kill());
    const dbFd = parseFds(r.report.fds).find((e) => e.path === db && e.kind === 'POSIX')!.fd;
    expect(fdinfoLocks(r.pid, dbFd).some((l) => l.kind === 'POSIX' && l.type === 'WRITE' && l.pid === r.pid)).toBe(true);
    expect(procLocks(inoOf(db)).filter((l) => l.kind === 'POSIX').every((l) => l.pid === r.pid)).toBe(true);
    expect(lslocksOf(r.pid).some((l) => l.path === db && l.type === 'POSIX')).toBe(true);
    const w = sqliteWrite(db);
    expect(w.status).not.toBe(0);
    expect(w.stderr).toMatch(/database is locked/);
    r.kill();
    await waitGone(r.pid);
    // once the restored holder is gone the database is writable again (the contender was refused by the lock, not by damage)
    expect(sqliteWrite(db, 'select count(*) from t;').status).toBe(0);
  });
});
