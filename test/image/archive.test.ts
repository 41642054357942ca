/**
 * Checkpoint archives: the layouts real tools write (GNU tar; Python's tarfile in pax and GNU
 * formats, an implementation independent of ours; gzip and zstd from their own programs) all
 * read into the same checkpoint, and hostile archives are refused with an ImageError that names
 * the archive and the entry, without anything being written outside (nothing is extracted).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { importCheckpointArchive } from '../../src/image/archive/index.js';
import { ImageError, type Checkpoint } from '../../src/image/index.js';
import { importCriuDirectory } from '../../src/image/criu/index.js';
import { missing, REPO_ROOT, runCli } from '../helpers/env.js';
import { PYTHON } from '../helpers/workload.js';

const skip = missing({ tools: ['tar', 'gzip', 'zstd', 'xz', PYTHON] }, 'checkpoint archives');
const FIX = path.join(REPO_ROOT, 'test/fixtures/criu/container');

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true }); });
function tmp(): string { const d = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-arch-')); dirs.push(d); return d; }

const SPEC = { hostname: 'db-0', annotations: { 'io.container.manager': 'cri-o', 'io.kubernetes.pod.namespace': 'shop', 'io.kubernetes.pod.name': 'db-0', 'io.kubernetes.pod.uid': 'u-1', 'io.kubernetes.container.name': 'db' } };
const CONFIG = { id: 'abc123', name: 'k8s_db_db-0_shop_u-1_0', checkpointedTime: '2026-01-02T03:04:05Z' };

/** A CRI-O-shaped tree: checkpoint/ (the real CRIU images), spec.dump, config.dump, the rest. */
function tree(): string {
  const t = tmp();
  fs.mkdirSync(path.join(t, 'checkpoint'));
  for (const n of fs.readdirSync(FIX)) if (n.endsWith('.img')) fs.copyFileSync(path.join(FIX, n), path.join(t, 'checkpoint', n));
  fs.writeFileSync(path.join(t, 'checkpoint', 'pages-1.img'), Buffer.alloc(3 << 20, 0xab)); // memory pages: skipped
  fs.writeFileSync(path.join(t, 'spec.dump'), JSON.stringify(SPEC));
  fs.writeFileSync(path.join(t, 'config.dump'), JSON.stringify(CONFIG));
  fs.writeFileSync(path.join(t, 'dump.log'), 'log\n');
  fs.writeFileSync(path.join(t, 'stats-dump'), Buffer.from([1, 2, 3]));
  return t;
}

/**
 * Python's tarfile writes what the test asks for, including what an attacker would put in:
 * entries = [[name, kind ('file'|'dir'|'symlink'|'hardlink'|'fifo'), data-or-source-path, linkname?], …]
 */
const PYTAR = String.raw`
import tarfile, sys, json, io
out, fmt, mode = sys.argv[1], sys.argv[2], sys.argv[3]
entries = json.loads(sys.stdin.read())
f = {'pax': tarfile.PAX_FORMAT, 'gnu': tarfile.GNU_FORMAT, 'ustar': tarfile.USTAR_FORMAT}[fmt]
with tarfile.open(out, mode, format=f) as t:
    for e in entries:
        name, kind = e['name'], e['kind']
        ti = tarfile.TarInfo(name)
        ti.mtime = 1767225600
        data = b''
        if kind == 'file':
            data = open(e['src'], 'rb').read() if 'src' in e else e.get('text', '').encode()
            ti.size = len(data)
        elif kind == 'dir': ti.type = tarfile.DIRTYPE
        elif kind == 'symlink': ti.type = tarfile.SYMTYPE; ti.linkname = e['link']
        elif kind == 'hardlink': ti.type = tarfile.LNKTYPE; ti.linkname = e['link']
        elif kind == 'fifo': ti.type = tarfile.FIFOTYPE
        t.addfile(ti, io.BytesIO(data) if kind == 'file' else None)
`;
interface PyEntry { name: string; kind: 'file' | 'dir' | 'symlink' | 'hardlink' | 'fifo'; src?: string; text?: string; link?: string }
function pytar(out: string, entries: PyEntry[], fmt: 'pax' | 'gnu' | 'ustar' = 'pax', mode = 'w'): string {
  const r = spawnSync(PYTHON, ['-c', PYTAR, out, fmt, mode], { input: JSON.stringify(entries), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return out;
}
function layoutEntries(t: string, prefix = ''): PyEntry[] {
  const out: PyEntry[] = [{ name: `${prefix}checkpoint`, kind: 'dir' }];
  for (const n of fs.readdirSync(path.join(t, 'checkpoint'))) out.push({ name: `${prefix}checkpoint/${n}`, kind: 'file', src: path.join(t, 'checkpoint', n) });
  for (const n of ['spec.dump', 'config.dump', 'dump.log', 'stats-dump']) out.push({ name: `${prefix}${n}`, kind: 'file', src: path.join(t, n) });
  return out;
}
function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}
async function refusal(file: string, opts: Parameters<typeof importCheckpointArchive>[1] = {}): Promise<ImageError> {
  try { await importCheckpointArchive(file, opts); } catch (e) { if (e instanceof ImageError) return e; throw e; }
  throw new Error(`accepted ${file}`);
}
/** what must be equal whatever the packaging */
const essence = (c: Checkpoint) => ({ processes: c.processes, files: c.files, fds: c.fds, locks: c.locks, skipped: c.skipped, source: c.source, createdAt: c.createdAt });

describe.skipIf(skip)('checkpoint archives: every packaging reads into the same checkpoint', () => {
  let want: ReturnType<typeof essence>;
  beforeAll(() => {
    const c = importCriuDirectory(FIX);
    want = essence({ ...c, source: { ...c.source, hostname: 'db-0', pod: { namespace: 'shop', name: 'db-0', uid: 'u-1', containers: ['db'] } }, createdAt: '2026-01-02T03:04:05.000Z' });
  });

  it('GNU tar: plain, gzip, zstd (program and JavaScript decoder), with and without "./"', async () => {
    const t = tree();
    const d = tmp();
    sh('tar', ['-C', t, '-cf', path.join(d, 'a.tar'), '.']);
    sh('tar', ['-C', t, '-cf', path.join(d, 'b.tar'), 'checkpoint', 'spec.dump', 'config.dump', 'dump.log']);
    sh('tar', ['-C', t, '-czf', path.join(d, 'c.tar.gz'), '.']);
    sh('tar', ['-C', t, '--zstd', '-cf', path.join(d, 'd.tar.zst'), '.']);
    for (const [f, comp] of [['a.tar', 'none'], ['b.tar', 'none'], ['c.tar.gz', 'gzip'], ['d.tar.zst', 'zstd']] as const) {
      const c = await importCheckpointArchive(path.join(d, f));
      expect(essence(c)).toEqual(want);
      expect(c.origin).toEqual({ kind: 'archive', path: path.join(d, f), criuImgVersion: 2, compression: comp, engine: 'CRI-O', container: { id: 'abc123', name: 'db' } });
    }
    const saved = process.env.LOCKMIG_ZSTD;
    process.env.LOCKMIG_ZSTD = 'js';
    try { expect(essence(await importCheckpointArchive(path.join(d, 'd.tar.zst')))).toEqual(want); } finally {
      if (saved === undefined) delete process.env.LOCKMIG_ZSTD; else process.env.LOCKMIG_ZSTD = saved;
    }
  });

  it('Python tarfile: pax with long names, GNU long names, ustar; a bare CRIU directory archived at the top level', async () => {
    const t = tree();
    const d = tmp();
    const deep = `./${'x'.repeat(120)}/`; // names over 100 bytes: pax path records / GNU ././@LongLink
    const extra: PyEntry = { name: `${deep}rootfs-diff-entry-${'y'.repeat(150)}`, kind: 'file', text: 'ignored' };
    for (const fmt of ['pax', 'gnu'] as const) {
      const f = pytar(path.join(d, `${fmt}.tar`), [...layoutEntries(t, './'), extra], fmt);
      expect(essence(await importCheckpointArchive(f))).toEqual(want);
    }
    const u = pytar(path.join(d, 'ustar.tar.gz'), layoutEntries(t), 'ustar', 'w:gz');
    expect(essence(await importCheckpointArchive(u))).toEqual(want);
    sh('tar', ['-C', FIX, '-cf', path.join(d, 'bare.tar'), '.']);
    const bare = await importCheckpointArchive(path.join(d, 'bare.tar'));
    expect(bare.locks).toEqual(want.locks);
    expect(bare.source.pod).toBeUndefined();
  });

  it('inspect and import on the command line; exit 5 with the entry named for a hostile archive', () => {
    const t = tree();
    const d = tmp();
    sh('tar', ['-C', t, '-czf', path.join(d, 'ok.tar.gz'), '.']);
    const r = runCli(['inspect', path.join(d, 'ok.tar.gz'), '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).source.pod.name).toBe('db-0');
    const imp = runCli(['import', path.join(d, 'ok.tar.gz'), '--out', path.join(d, 'out'), '--json']);
    expect(imp.status, imp.stderr).toBe(0);
    expect(JSON.parse(imp.stdout)).toMatchObject({ kind: 'archive', locks: want.locks.length });
    const bad = pytar(path.join(d, 'bad.tar'), [...layoutEntries(t), { name: '../../escape', kind: 'file', text: 'x' }]);
    const e = runCli(['inspect', bad]);
    expect(e.status).toBe(5);
    expect(e.stderr).toMatch(/bad\.tar.*"\.\.\/\.\.\/escape".*path traversal/);
  });
});

describe.skipIf(skip)('hostile and broken archives are refused with an ImageError', () => {
  it('path traversal and absolute names anywhere in the archive; nothing is created outside', async () => {
    const t = tree();
    const d = tmp();
    for (const name of ['../evil', 'checkpoint/../../evil', '/etc/evil', 'a/../../evil']) {
      const f = pytar(path.join(d, 'x.tar'), [{ name, kind: 'file', text: 'pwned' }, ...layoutEntries(t)]);
      const e = await refusal(f);
      expect(e.code).toBe('INVALID');
      expect(e.message).toContain(JSON.stringify(name));
      expect(e.message).toMatch(/path traversal/);
      expect(e.offset).toBe(0);
    }
    expect(fs.existsSync(path.join(path.dirname(d), 'evil'))).toBe(false);
  });

  it('a needed image or .dump file as a symlink, hard link or FIFO; a needed image twice', async () => {
    const t = tree();
    const d = tmp();
    const base = layoutEntries(t).filter((e) => e.name !== 'checkpoint/files.img' && e.name !== 'spec.dump');
    const cases: [PyEntry[], RegExp][] = [
      [[...base, { name: 'checkpoint/files.img', kind: 'symlink', link: '/etc/shadow' }, { name: 'spec.dump', kind: 'file', text: '{}' }], /checkpoint\/files\.img.*symlink entry/],
      [[...base, { name: 'checkpoint/files.img', kind: 'hardlink', link: 'dump.log' }, { name: 'spec.dump', kind: 'file', text: '{}' }], /hardlink entry/],
      [[...base, { name: 'checkpoint/files.img', kind: 'file', src: path.join(FIX, 'files.img') }, { name: 'spec.dump', kind: 'fifo' }], /spec\.dump.*fifo entry/],
      [[...layoutEntries(t), { name: 'checkpoint/filelocks.img', kind: 'file', text: 'later copy' }], /filelocks\.img.*appears twice/],
    ];
    for (const [entries, re] of cases) {
      const e = await refusal(pytar(path.join(d, 'x.tar'), entries));
      expect(e.message).toMatch(re);
      expect(e.file).toMatch(/x\.tar:/);
    }
    // a link that is not something lockmig reads is simply never created
    const ok = pytar(path.join(d, 'y.tar'), [...layoutEntries(t), { name: 'rootfs/etc/passwd', kind: 'symlink', link: '/etc/shadow' }]);
    expect((await importCheckpointArchive(ok)).locks.length).toBeGreaterThan(0);
  });

  it('huge entries, decompression bombs, too many entries', async () => {
    const t = tree();
    const d = tmp();
    sh('tar', ['-C', t, '-cf', path.join(d, 'a.tar'), '.']);
    // an image over the per-image limit
    expect((await refusal(path.join(d, 'a.tar'), { criuLimits: { maxImageBytes: 1000, maxEntries: 1000 } })).message).toMatch(/files\.img.*more than the 1000-byte limit/);
    // a header claiming 8 GiB of data that is not there
    const big = Buffer.from(fs.readFileSync(path.join(d, 'a.tar')));
    const hdr = Buffer.alloc(512);
    hdr.write('checkpoint/pages-9.img', 0);
    hdr.write('0000644\0', 100); hdr.write('0000000\0', 108); hdr.write('0000000\0', 116);
    hdr.write('100000000000', 124); hdr.write('00000000000\0', 136); hdr.write('0', 156); hdr.write('ustar\0' + '00', 257);
    hdr.write('        ', 148);
    let sum = 0; for (const x of hdr) sum += x;
    hdr.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    fs.writeFileSync(path.join(d, 'cut.tar'), Buffer.concat([hdr, big.subarray(0, 4096)]));
    expect(await refusal(path.join(d, 'cut.tar'))).toMatchObject({ code: 'TRUNCATED', offset: 0 });
    // a bomb: 64 MiB of zeros in a small gzip
    fs.writeFileSync(path.join(t, 'checkpoint', 'pages-2.img'), Buffer.alloc(64 << 20));
    sh('tar', ['-C', t, '-czf', path.join(d, 'bomb.tar.gz'), '.']);
    expect(fs.statSync(path.join(d, 'bomb.tar.gz')).size).toBeLessThan(1 << 20);
    expect((await refusal(path.join(d, 'bomb.tar.gz'), { expandLimits: { maxExpandedBytes: 32 << 20, maxRatio: 1e9 } })).message).toMatch(/expands to more than 33554432 bytes/);
    expect((await refusal(path.join(d, 'bomb.tar.gz'), { expandLimits: { maxExpandedBytes: 2 ** 40, maxRatio: 100, ratioAfterBytes: 16 << 20 } })).message).toMatch(/expands more than 100:1.*decompression bomb/);
    sh('tar', ['-C', t, '--zstd', '-cf', path.join(d, 'bomb.tar.zst'), '.']);
    expect((await refusal(path.join(d, 'bomb.tar.zst'), { expandLimits: { maxExpandedBytes: 32 << 20, maxRatio: 1e9 } })).message).toMatch(/expands to more than/);
    expect((await refusal(path.join(d, 'a.tar'), { tarLimits: { maxEntries: 5 } })).message).toMatch(/more than 5 entries/);
  });

  it('not a tar, xz, bad checksum, cut-off gzip/zstd, no CRIU images, bad spec.dump, global pax path', async () => {
    const t = tree();
    const d = tmp();
    fs.writeFileSync(path.join(d, 'junk'), Buffer.from('this is not an archive at all'.repeat(40)));
    expect((await refusal(path.join(d, 'junk'))).code).toBe('BAD_MAGIC');
    fs.writeFileSync(path.join(d, 'empty'), '');
    expect((await refusal(path.join(d, 'empty'))).code).toBe('TRUNCATED');
    sh('tar', ['-C', t, '-cJf', path.join(d, 'a.tar.xz'), '.']);
    expect((await refusal(path.join(d, 'a.tar.xz'))).message).toMatch(/xz-compressed/);
    sh('tar', ['-C', t, '-cf', path.join(d, 'a.tar'), '.']);
    const b = fs.readFileSync(path.join(d, 'a.tar'));
    b[512 + 10] ^= 0x55; // inside the second header's name (the first entry, "./", has no data)
    fs.writeFileSync(path.join(d, 'sum.tar'), b);
    expect((await refusal(path.join(d, 'sum.tar'))).message).toMatch(/checksum/);
    sh('tar', ['-C', t, '-czf', path.join(d, 'a.tar.gz'), '.']);
    sh('tar', ['-C', t, '--zstd', '-cf', path.join(d, 'a.tar.zst'), '.']);
    for (const f of ['a.tar.gz', 'a.tar.zst']) {
      const all = fs.readFileSync(path.join(d, f));
      fs.writeFileSync(path.join(d, `cut-${f}`), all.subarray(0, all.length >> 1));
      const e = await refusal(path.join(d, `cut-${f}`));
      expect(['INVALID', 'TRUNCATED']).toContain(e.code);
    }
    const noImg = pytar(path.join(d, 'noimg.tar'), [{ name: 'spec.dump', kind: 'file', text: '{}' }, { name: 'rootfs-diff.tar', kind: 'file', text: '' }]);
    expect((await refusal(noImg)).message).toMatch(/no CRIU images/);
    const badSpec = pytar(path.join(d, 'spec.tar'), [...layoutEntries(t).filter((e) => e.name !== 'spec.dump'), { name: 'spec.dump', kind: 'file', text: '{"annotations": ' }]);
    expect((await refusal(badSpec))).toMatchObject({ code: 'INVALID', file: `${badSpec}:spec.dump` });
    const g = spawnSync(PYTHON, ['-c', `
import tarfile, io, sys
with tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT, pax_headers={'path': 'checkpoint/files.img'}) as t:
    ti = tarfile.TarInfo('x'); ti.size = 1; t.addfile(ti, io.BytesIO(b'x'))
`, path.join(d, 'g.tar')], { encoding: 'utf8' });
    expect(g.status, g.stderr).toBe(0);
    expect((await refusal(path.join(d, 'g.tar'))).message).toMatch(/global pax header/);
  });

  it('fuzz: damaged archives (plain and gzip) give an ImageError or a valid checkpoint, never another error', async () => {
    const t = tree();
    fs.rmSync(path.join(t, 'checkpoint', 'pages-1.img'));
    const d = tmp();
    sh('tar', ['-C', t, '-cf', path.join(d, 'a.tar'), '.']);
    sh('tar', ['-C', t, '-czf', path.join(d, 'a.tar.gz'), '.']);
    let seed = 777;
    const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
    for (const f of ['a.tar', 'a.tar.gz']) {
      const orig = fs.readFileSync(path.join(d, f));
      for (let i = 0; i < 120; i++) {
        const b = Buffer.from(orig);
        for (let k = 0; k < 1 + rnd(3); k++) b[rnd(b.length)] = rnd(256);
        fs.writeFileSync(path.join(d, 'fz'), rnd(5) === 0 ? b.subarray(0, rnd(b.length)) : b);
        try { await importCheckpointArchive(path.join(d, 'fz')); } catch (e) {
          if (!(e instanceof ImageError)) throw new Error(`${f} mutation ${i}: ${(e as Error).stack}`);
        }
      }
    }
  });
});
