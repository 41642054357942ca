/**
 * lockmig → CRIU: `lockmig export-criu` writes images that Debian's crit (CRIU's own decoder)
 * reads, and what crit decodes agrees with `lockmig inspect --json` field by field — for a
 * real `lockmig dump` of a live process and for an imported CRIU 4.2 dump.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { dumpProcesses } from '../../src/engine/dump.js';
import { writeCheckpoint } from '../../src/image/index.js';
import { importCriuDirectory, writeCriuDirectory, ExportError } from '../../src/image/criu/index.js';
import { missing, REPO_ROOT, runCli } from '../helpers/env.js';
import { startHolder } from '../helpers/workload.js';

const skip = missing({ tools: ['crit'] }, 'export-criu vs crit');
const noRoot = skip || missing({ root: true }, 'export-criu of a live lockmig dump');
const P62 = 1n << 62n;

const cleanups: (() => void)[] = [];
afterEach(() => { for (const c of cleanups.splice(0).reverse()) { try { c(); } catch { /* best effort */ } } });
function tmp(): string { const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-exp-')); cleanups.push(() => fs.rmSync(d, { recursive: true, force: true })); return d; }

function crit(file: string): any {
  const r = spawnSync('crit', ['decode', '-i', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`crit decode ${file}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Everything crit decodes from OUT must say what `lockmig inspect --json SRC` says. */
function expectCritAgrees(src: string, out: string): void {
  const r = runCli(['inspect', src, '--json']);
  expect(r.status, r.stderr).toBe(0);
  const j = JSON.parse(r.stdout);
  const names = fs.readdirSync(out).sort();
  expect(names).toEqual(['filelocks.img', 'files.img', 'inventory.img', 'pstree.img',
    ...j.processes.flatMap((p: any) => [`core-${p.pid}.img`, `fdinfo-${p.pid}.img`, `ids-${p.pid}.img`])].sort());
  const all = Object.fromEntries(names.map((n) => [n, crit(path.join(out, n))]));

  expect(all['filelocks.img'].magic).toBe('FILE_LOCKS');
  const FL: Record<string, number> = { POSIX: 1, FLOCK: 2, OFD: 4, LEASE: 8 };
  expect(all['filelocks.img'].entries).toEqual(j.locks.map((l: any) => ({
    flag: FL[l.kind], type: l.type === 'WRITE' ? 1 : 0, pid: l.pid, fd: l.fd, start: Number(l.start),
    len: l.end === 'EOF' ? 0 : Number(BigInt(l.end) - BigInt(l.start) + 1n),
  })));
  expect(all['files.img'].magic).toBe('FILES');
  expect(all['files.img'].entries.map((e: any) => [e.type, e.id, e.reg.id, e.reg.name, e.reg.pos, e.reg.mnt_id ?? -1]))
    .toEqual(j.files.map((f: any) => ['REG', f.id, f.id, f.path, Number(f.pos), f.mntId]));
  for (const p of j.processes) {
    const fdi = all[`fdinfo-${p.pid}.img`];
    expect(fdi.magic).toBe('FDINFO');
    expect(fdi.entries).toEqual(j.fds.filter((d: any) => d.pid === p.pid).map((d: any) => ({ id: d.fileId, flags: d.cloexec ? 1 : 0, type: 'REG', fd: d.fd })));
    expect(all[`ids-${p.pid}.img`].entries[0].files_id).toBe(p.pid); // fdinfo-<files_id>.img
    expect(all[`core-${p.pid}.img`].entries[0].tc.comm).toBe(p.comm);
  }
  expect(all['pstree.img'].entries.map((e: any) => e.pid)).toEqual(j.processes.map((p: any) => p.pid));
  expect(all['inventory.img'].magic).toBe('INVENTORY');
  expect(all['inventory.img'].entries[0]).toMatchObject({ img_version: 2, fdinfo_per_id: true });
  // CRIU's explorer walks pstree + core images
  const ps = spawnSync('crit', ['x', out, 'ps'], { encoding: 'utf8' });
  expect(ps.status, ps.stderr).toBe(0);
  expect(ps.stdout).toContain(j.processes[0].comm);
  // and lockmig reads its own export back as a CRIU directory with the same locks, files and fds
  const back = runCli(['inspect', out, '--json']);
  expect(back.status, back.stderr).toBe(0);
  const b = JSON.parse(back.stdout);
  expect(b.locks).toEqual(j.locks);
  expect(b.fds).toEqual(j.fds);
  expect(b.files.map((f: any) => [f.id, f.path, f.flags, f.pos, f.mntId])).toEqual(j.files.map((f: any) => [f.id, f.path, f.flags, f.pos, f.mntId]));
}

describe.skipIf(skip)('export-criu: crit reads every image and agrees with lockmig inspect', () => {
  it.skipIf(noRoot)('a real lockmig dump of a live process (OFD at 2^62, flock, POSIX, a shared description, a path with a space)', async () => {
    const d = tmp();
    const h = await startHolder([
      { op: 'open', name: 'a', path: path.join(d, 'a file') },
      { op: 'ofd', fd: 'a', type: 'w', start: P62, len: 16n },
      { op: 'open', name: 'b', path: path.join(d, 'b') },
      { op: 'flock', fd: 'b', type: 'r' },
      { op: 'dup', fd: 'b', as: 'b2', to: 77 },
      { op: 'open', name: 'c', path: path.join(d, 'c') },
      { op: 'posix', fd: 'c', type: 'w', start: 5n, len: 0n },
      { op: 'seek', fd: 'c', pos: 12345n },
    ]);
    cleanups.push(() => h.kill());
    const src = path.join(d, 'ckpt');
    writeCheckpoint(src, dumpProcesses({ pids: [h.child.pid!] }));
    const out = path.join(d, 'criu-out');
    const r = runCli(['export-criu', src, out]);
    expect(r.status, r.stderr).toBe(0);
    expectCritAgrees(src, out);
  });

  it('an imported CRIU 4.2 dump (two processes, a container) exports back to images crit agrees with', () => {
    for (const fx of ['fork-gap', 'container']) {
      const d = tmp();
      const src = path.join(d, 'ckpt');
      writeCheckpoint(src, importCriuDirectory(path.join(REPO_ROOT, 'test/fixtures/criu', fx)));
      const out = path.join(d, 'out');
      expect(runCli(['export-criu', src, out]).status).toBe(0);
      expectCritAgrees(src, out);
    }
  });

  it('OUT is written whole or not at all: a non-empty OUT is refused, an empty one is replaced, no temporary is left', () => {
    const d = tmp();
    const ckpt = importCriuDirectory(path.join(REPO_ROOT, 'test/fixtures/criu', 'host'));
    fs.mkdirSync(path.join(d, 'full'));
    fs.writeFileSync(path.join(d, 'full', 'keep'), 'x');
    expect(() => writeCriuDirectory(path.join(d, 'full'), ckpt)).toThrow(ExportError);
    expect(fs.readdirSync(path.join(d, 'full'))).toEqual(['keep']);
    fs.writeFileSync(path.join(d, 'file'), 'x');
    expect(() => writeCriuDirectory(path.join(d, 'file'), ckpt)).toThrow(/not a directory/);
    fs.mkdirSync(path.join(d, 'empty'));
    expect(writeCriuDirectory(path.join(d, 'empty'), ckpt).images).toContain('filelocks.img');
    expect(fs.statSync(path.join(d, 'empty')).mode & 0o777).toBe(0o700);
    expect(fs.readdirSync(d).sort()).toEqual(['empty', 'file', 'full']);
    const cli = runCli(['export-criu', path.join(REPO_ROOT, 'test/fixtures/criu', 'host'), path.join(d, 'full')]);
    expect(cli.status).toBe(1);
    expect(cli.stderr).toMatch(/not empty/);
  });
});
