/**
 * CRIU → lockmig, on real CRIU output: a python3 process takes POSIX, flock, OFD (also at
 * 2^62) locks on files with spaces in their names and holds a SQLite database in BEGIN
 * EXCLUSIVE; `criu dump --file-locks --leave-running` (CRIU 4.x) records it; the holder is
 * killed; `lockmig restore --image <CRIU dir | kubelet-style archive>` starts a python3 app with
 * the locks. Witnesses nobody here wrote: the restored process's fdinfo, /proc/locks, flock(1),
 * python3 fcntl and the sqlite3 CLI.
 *
 * The kubelet archive is laid out like CRI-O's from a real CRIU dump of a process in its own pid
 * and mount namespace (CRI-O itself cannot run here): checkpoint/ + spec.dump + config.dump.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { importCheckpoint } from '../../src/engine/import.js';
import { parseFds } from '../../src/engine/envfds.js';
import { readCheckpoint } from '../../src/image/index.js';
import { loadCheckpoint } from '../../src/image/input.js';
import { missing, runCli } from '../helpers/env.js';
import { criu4, criuDump, kubeletArchiveTree, missingCriu4, startCriuHolder, type CriuHolder } from '../helpers/criu.js';
import {
  contendFcntl, contendFlock, fdinfoLocks, inoOf, procLocks, sqliteWrite, startRestored, waitGone, PYTHON, type Restored,
} from '../helpers/workload.js';

const skip = missing({ root: true, tools: ['crit', 'flock', 'sqlite3', 'unshare', 'tar', 'gzip', PYTHON] }, 'CRIU interop') || missingCriu4('CRIU interop');
const CRIU = criu4()!;
const P62 = 1n << 62n;

const cleanups: (() => void)[] = [];
afterEach(() => { for (const c of cleanups.splice(0).reverse()) { try { c(); } catch { /* best effort */ } } });

function tmp(tag: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `lockmig-criu-${tag}-`));
  cleanups.push(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

function newDb(dir: string): string {
  const db = path.join(dir, 'app.db');
  expect(sqliteWrite(db, 'create table t(x); insert into t values (1);').status).toBe(0);
  return db;
}

async function holder(data: string, spec: Parameters<typeof startCriuHolder>[2], container?: { mountAt: string }): Promise<CriuHolder> {
  const ctl = tmp('ctl');
  const h = await startCriuHolder(data, ctl, spec, container ? { ...container, rootfs: tmp('rootfs') } : undefined);
  cleanups.push(() => h.kill());
  return h;
}

async function stop(h: CriuHolder): Promise<void> {
  const pids = [h.pid, ...h.report.kids];
  h.kill();
  for (const p of pids) await waitGone(p).catch(() => undefined);
  await waitGone(h.pid);
}

function inspectJson(input: string): any {
  const r = runCli(['inspect', input, '--json']);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

/** The locks of the basic holder, held by `r`, checked three independent ways. */
function expectBasicLocksHeldBy(r: Restored, vol: string): void {
  const entries = parseFds(r.report.fds);
  const fdOf = (name: string, kind: string) => entries.find((e) => e.path.endsWith(`/${name}`) && e.kind === kind)!.fd;
  // 1. the restored process's own fdinfo
  const ofdFd = fdOf('ofd big', 'OFD');
  const ofd = fdinfoLocks(r.pid, ofdFd).filter((l) => l.kind === 'OFDLCK');
  expect(ofd.some((l) => l.type === 'WRITE' && l.start === P62 && l.end === P62 + 9n)).toBe(true);
  expect(ofd.some((l) => l.type === 'READ' && l.start === 0n && l.end === 99n)).toBe(true);
  expect(fdinfoLocks(r.pid, fdOf('posix lock.db', 'POSIX')).some((l) => l.kind === 'POSIX' && l.type === 'WRITE' && l.pid === r.pid && l.end === 9n)).toBe(true);
  // 2. the kernel's table: POSIX and flock owners are the restored process
  expect(procLocks(inoOf(path.join(vol, 'posix lock.db'))).map((l) => [l.kind, l.pid])).toEqual([['POSIX', r.pid]]);
  expect(procLocks(inoOf(path.join(vol, 'flock file'))).map((l) => [l.kind, l.type, l.pid])).toEqual([['FLOCK', 'WRITE', r.pid]]);
  expect(procLocks(inoOf(path.join(vol, 'flock shared'))).map((l) => [l.kind, l.type, l.pid])).toEqual([['FLOCK', 'READ', r.pid]]);
  // 3. independent contenders
  expect(contendFlock('w', path.join(vol, 'flock file'))).toBe('busy');
  expect(contendFlock('w', path.join(vol, 'flock shared'))).toBe('busy');
  expect(contendFlock('r', path.join(vol, 'flock shared'))).toBe('acquired');
  expect(contendFcntl('ofd', 'w', path.join(vol, 'ofd big'), P62 + 5n, 1n)).toBe('busy');
  expect(contendFcntl('ofd', 'w', path.join(vol, 'ofd big'), 50n, 1n)).toBe('busy');
  expect(contendFcntl('ofd', 'r', path.join(vol, 'ofd big'), 50n, 1n)).toBe('acquired');
  expect(contendFcntl('ofd', 'w', path.join(vol, 'ofd big'), 1000n, 1n)).toBe('acquired');
  expect(contendFcntl('posix', 'w', path.join(vol, 'posix lock.db'), 0n, 10n)).toBe('busy');
}

async function expectSqliteMoved(r: Restored, db: string): Promise<void> {
  expect(procLocks(inoOf(db)).filter((l) => l.kind === 'POSIX').every((l) => l.pid === r.pid)).toBe(true);
  const w = sqliteWrite(db);
  expect(w.status).not.toBe(0);
  expect(w.stderr).toMatch(/database is locked/);
  r.kill();
  await waitGone(r.pid);
  expect(sqliteWrite(db).status).toBe(0); // refused by the lock, not by damage
}

describe.skipIf(skip)('CRIU 4.x images → lockmig restore', () => {
  it('restores POSIX, flock, OFD (2^62) and SQLite locks from a CRIU image directory; contenders are refused', async () => {
    const vol = path.join(tmp('data'), 'my data');
    fs.mkdirSync(vol);
    const db = newDb(vol);
    const h = await holder(vol, { basic: true, sqlite: true });
    expect(sqliteWrite(db).stderr).toMatch(/database is locked/); // the source holds it
    const img = path.join(tmp('img'), 'criu');
    criuDump(CRIU, h.pid, img);

    // lockmig reads the CRIU directory as it is
    const j = inspectJson(img);
    expect(j.method).toBe('criu');
    expect(j.origin).toMatchObject({ kind: 'criu-dir', criuImgVersion: 2 });
    const ofdLocks = j.locks.filter((l: any) => l.kind === 'OFD');
    expect(ofdLocks.map((l: any) => [l.type, l.start, l.end]).sort()).toEqual([['READ', '0', '99'], ['WRITE', String(P62), String(P62 + 9n)]]);
    expect(j.files.map((f: any) => f.path)).toEqual(expect.arrayContaining([path.join(vol, 'posix lock.db'), path.join(vol, 'flock file'), path.join(vol, 'ofd big'), db]));
    expect(j.fds.filter((d: any) => d.fileId === j.locks.find((l: any) => l.kind === 'OFD').fileId).map((d: any) => d.fd)).toEqual(expect.arrayContaining([h.report.fds.ofd, 40]));

    await stop(h);
    const r = await startRestored(img, { allow: [vol], timeoutS: 5 });
    cleanups.push(() => r.kill());
    expect(r.pid).toBeGreaterThan(0);
    expectBasicLocksHeldBy(r, vol);
    // fds come back at CRIU's recorded numbers: the dup of the OFD description at 40 too
    expect(parseFds(r.report.fds).filter((e) => e.path.endsWith('/ofd big')).map((e) => e.fd)).toEqual(expect.arrayContaining([h.report.fds.ofd!, 40]));
    await expectSqliteMoved(r, db);
  });

  it('refuses paths outside --allow before opening anything (exit 4), and a busy lock times out naming its holder (exit 3)', async () => {
    const vol = tmp('data');
    const h = await holder(vol, { basic: true });
    const img = path.join(tmp('img'), 'criu');
    criuDump(CRIU, h.pid, img);
    const refused = runCli(['restore', '--image', img, '--allow', '/nowhere', '--timeout', '0', '--', 'true']);
    expect(refused.status).toBe(4);
    expect(refused.stderr).toMatch(/outside|allow/);
    // the source still holds everything (--leave-running): restoring now must wait, then fail
    const busy = runCli(['restore', '--image', img, '--allow', vol, '--timeout', '0.3', '--', 'true']);
    expect(busy.status).toBe(3);
    expect(busy.stderr).toContain(`pid ${h.pid}`);
    await stop(h);
  });

  it('a container (own pid+mount namespace) dumped by CRIU, packed like a kubelet/CRI-O checkpoint archive (tar and tar.gz), restores through the archive', async () => {
    const vol = tmp('vol');
    const db = newDb(vol);
    const h = await holder(vol, { basic: true, sqlite: true }, { mountAt: '/data/vol a' });
    expect(h.report.pid).toBe(1); // pid 1 of its own pid namespace
    const img = path.join(tmp('img'), 'criu');
    criuDump(CRIU, h.pid, img, h.externals);
    expect(fs.readdirSync(img).some((n) => /^mountpoints-\d+\.img$/.test(n))).toBe(true);

    const tree = kubeletArchiveTree(img, path.join(tmp('tree'), 'a'), { namespace: 'shop', name: 'db-0', uid: '6d1f6f39-0c8e-4f5b-9e39-3f1f0c1b2a10', container: 'db' });
    const dir = tmp('arch');
    const tar = path.join(dir, 'checkpoint-db-0_shop-db-2026-01-01T00:10:00Z.tar');
    const tgz = path.join(dir, 'checkpoint.tar.gz');
    expect(spawnSync('tar', ['-C', tree, '-cf', tar, '.']).status).toBe(0);
    expect(spawnSync('tar', ['-C', tree, '-czf', tgz, '.']).status).toBe(0);

    for (const a of [tar, tgz]) {
      const j = inspectJson(a);
      expect(j.source.pod).toEqual({ namespace: 'shop', name: 'db-0', uid: '6d1f6f39-0c8e-4f5b-9e39-3f1f0c1b2a10', containers: ['db'] });
      expect(j.origin).toMatchObject({ kind: 'archive', engine: 'CRI-O', compression: a === tar ? 'none' : 'gzip', container: { name: 'db' } });
      expect(j.createdAt).toBe('2026-01-01T00:10:00.000Z');
      // paths as the container saw them, resolved through CRIU's mount ids to the volume's mount
      const f = j.files.find((x: any) => x.path === '/data/vol a/posix lock.db');
      expect(f).toMatchObject({ mountPoint: '/data/vol a', relPath: 'posix lock.db' });
      expect(f.mntId).toBeGreaterThan(0);
      expect(j.locks.filter((l: any) => l.kind === 'POSIX' && l.pid === 1).length).toBeGreaterThanOrEqual(2); // posix lock.db + sqlite
    }

    // the agent's building block: archive → lockmig directory, atomically; the same model as reading the archive
    const out = path.join(tmp('imported'), 'ckpt');
    const res = await importCheckpoint(tar, out);
    expect(res.kind).toBe('archive');
    expect(readCheckpoint(out)).toEqual(await loadCheckpoint(tar));

    await stop(h);
    // the replacement "container": the same volume at the same path under --root
    const root = tmp('newroot');
    const wrap = (pre: string) => ['unshare', '--mount', 'sh', '-c',
      `mount --make-rprivate / && mkdir -p "${root}/data/vol a" && mount --bind "${vol}" "${root}/data/vol a" && ${pre} exec "$@"`, 'sh'];
    for (const a of [tar, tgz]) {
      const r = await startRestored(a, { root, allow: ['/data'], timeoutS: 5, wrap: wrap('') });
      cleanups.push(() => r.kill());
      expectBasicLocksHeldBy(r, vol);
      await expectSqliteMoved(r, db);
      await waitGone(r.pid);
    }
    // the lockmig directory the building block wrote restores the same way
    const r = await startRestored(out, { root, allow: ['/data'], timeoutS: 5, wrap: wrap('') });
    cleanups.push(() => r.kill());
    expectBasicLocksHeldBy(r, vol);
  });

  it('CRIU\'s gap: the POSIX lock a child took through an inherited description is not in the image; lockmig says so', async () => {
    const vol = tmp('data');
    const h = await holder(vol, { fork: true });
    const child = h.report.kids[0]!;
    const file = path.join(vol, 'inherited');
    // the kernel shows the child's POSIX lock before the dump
    expect(procLocks(inoOf(file)).some((l) => l.kind === 'POSIX' && l.pid === child && l.start === 100n)).toBe(true);
    const img = path.join(tmp('img'), 'criu');
    criuDump(CRIU, h.pid, img);
    const j = inspectJson(img);
    expect(j.processes.map((p: any) => p.pid).sort()).toEqual([h.pid, child].sort());
    expect(j.locks.filter((l: any) => l.kind === 'POSIX')).toEqual([]); // dropped by CRIU (discard_dup_locks_tail)
    expect(j.locks.filter((l: any) => l.kind === 'OFD')).toHaveLength(1); // the shared OFD lock, once
    expect(j.fds.filter((d: any) => d.fileId === j.locks[0].fileId).map((d: any) => d.pid).sort()).toEqual([h.pid, child].sort());
    expect(j.warnings.join('\n')).toMatch(/inherited from its parent/);
    const text = runCli(['inspect', img]);
    expect(text.stdout).toMatch(/warnings:[\s\S]*inherited/);
  });

  it('locked fds that cannot be reopened by path (memfd, unlinked file) are reported per fd; the rest is restored', async () => {
    const vol = tmp('data');
    const h = await holder(vol, { basic: true, memfd: true, deleted: true });
    const img = path.join(tmp('img'), 'criu');
    criuDump(CRIU, h.pid, img);
    const j = inspectJson(img);
    const sk = j.skipped.map((s: any) => [s.fd, s.reason, s.locked]);
    expect(sk).toEqual(expect.arrayContaining([[h.report.fds.memfd, 'memfd', true], [h.report.fds.deleted, 'deleted', true]]));
    await stop(h);
    const r = await startRestored(img, { allow: [vol], timeoutS: 5 });
    cleanups.push(() => r.kill());
    expectBasicLocksHeldBy(r, vol);
    const warned = r.stderr().split('\n').filter((l) => l.includes('lock not restorable'));
    expect(warned.map((l) => JSON.parse(l).reason).sort()).toEqual(['deleted', 'memfd']);
  });
});
