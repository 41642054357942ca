/**
 * Generator of hostile checkpoint directories. `makeCase(seed, index, fixture)` is a pure
 * function of its arguments: the same triple always gives the same bytes, so a failing case is
 * replayed from its seed and index alone.
 *
 * Families (weights in FAMILIES):
 *   valid           an untouched random checkpoint (the baseline must read back)
 *   bytes           bit flips, byte insertions/deletions, garbage, on any file, checksums left stale
 *   bytes-resealed  the same on an image, then manifest checksum and size re-sealed so the bytes reach the decoder
 *   truncate        an image cut at every kind of boundary (header, length word, entry), mostly re-sealed
 *   proto           protobuf-level: missing/duplicated/unknown fields, wrong wire types, huge and overlong
 *                   varints, absurd lengths, nested garbage, extra/removed entries; re-sealed
 *   absurd          semantically absurd but well-encoded numbers: fds ≥ RLIMIT_NOFILE or negative, offsets at
 *                   and over 2^63, ids over 2^32, duplicate fds, locks on fds that files.img does not hold, …
 *   manifest        manifest.json: wrong types, nulls, huge numbers, NUL and lone surrogates, path escapes in
 *                   image names, prototype keys, deep nesting, raw non-UTF-8 and truncated text
 *   paths           well-formed images whose recorded paths are hostile (see layout.ts recordedPaths)
 *   huge            tens of thousands of processes, fds, locks or files (catches quadratic work)
 *   fs              image files that are FIFOs, directories, symlinks (to canaries, /dev/zero) or huge sparse files
 */
import type { Checkpoint, FdRecord, FileRecord, LockRecord, ProcessRecord } from '../../src/image/model.js';
import { Rng } from './rng.js';
import { draftOf, looseFromModel, render, reseal, type LooseCheckpoint } from './image-encode.js';
import { boundaries } from './protowire.js';
import { absurd, mutateBytes, mutateEntries, mutateManifestObject, mutateManifestText, type Json } from './image-mutate.js';
import { ALLOWED_FILES, recordedPaths, type Fixture } from './layout.js';

export type Special =
  | { readonly special: 'symlink'; readonly target: string }
  | { readonly special: 'fifo' }
  | { readonly special: 'dir' }
  | { readonly special: 'sparse'; readonly size: number };

export type CaseFile = Buffer | Special;

export interface FuzzCase {
  readonly seed: string;
  readonly index: number;
  readonly family: Family;
  /** what was done, for the failure report */
  readonly notes: readonly string[];
  readonly files: ReadonlyMap<string, CaseFile>;
}

export const FAMILIES = [
  ['valid', 3], ['bytes', 12], ['bytes-resealed', 22], ['truncate', 8], ['proto', 18], ['absurd', 16],
  ['manifest', 12], ['paths', 15], ['huge', 0.03], ['fs', 1.5],
] as const;
export type Family = (typeof FAMILIES)[number][0];

// ---- a random valid checkpoint

/**
 * A random valid checkpoint. `fdOffset` moves every recorded fd number up (the CLI sample uses
 * 100 for half its cases: above Node.js's own fds, so the shim needs no fd-reserving re-exec and
 * the sample costs one Node.js start instead of two).
 */
export function randomModel(rng: Rng, fx: Fixture, opts: { hostilePaths?: number; fdOffset?: number } = {}): Checkpoint {
  const A = `${fx.prefix}/allowed`;
  const nproc = rng.weighted([[6, 1], [3, 2], [1, 4]] as const);
  const pids: number[] = [];
  while (pids.length < nproc) {
    const p = rng.int(2, 4_194_304);
    if (!pids.includes(p)) pids.push(p);
  }
  const processes: ProcessRecord[] = pids.map((pid, i) => ({
    pid, ppid: i === 0 ? 1 : pids[0]!, nsPid: i + 1, comm: rng.pick(['db', 'worker', 'sqlite3', 'python3']), cgroup: '/kubepods/burstable/pod1/c1',
  }));
  const nfiles = rng.int(1, 6);
  const hostile = rng.pick(recordedPaths(fx).filter((p): p is string => typeof p === 'string'));
  const files: FileRecord[] = [];
  for (let i = 0; i < nfiles; i++) {
    const rel = rng.pick(ALLOWED_FILES);
    files.push({
      id: i + 1, path: i === 0 && (opts.hostilePaths ?? 0) > 0 ? hostile : `${A}/${rel}`, flags: rng.pick([0o100002, 0o100000, 0o102002, 0o100001]),
      pos: rng.chance(0.8) ? 0n : BigInt(rng.int(1, 1 << 20)), mntId: rng.int(20, 400), dev: { major: 254, minor: rng.int(0, 3) },
      ino: BigInt(rng.int(2, 1 << 30)), mountPoint: A, relPath: rel,
    });
  }
  const fds: FdRecord[] = [];
  const used = new Map<number, Set<number>>(pids.map((p) => [p, new Set<number>()]));
  for (const f of files) {
    const n = rng.weighted([[7, 1], [3, 2]] as const);
    for (let k = 0; k < n; k++) {
      const pid = rng.pick(pids);
      const u = used.get(pid)!;
      let fd = rng.weighted([[8, rng.int(3, 40)], [1, rng.int(0, 2)], [1, rng.int(41, 600)]] as const) + (opts.fdOffset ?? 0);
      while (u.has(fd)) fd++;
      u.add(fd);
      fds.push({ pid, fd, fileId: f.id, cloexec: rng.chance(0.3) });
    }
  }
  // the fdinfo images group fds by process: keep that order so a valid model reads back equal
  fds.sort((a, b) => pids.indexOf(a.pid) - pids.indexOf(b.pid));
  const locks: LockRecord[] = [];
  const nlocks = rng.int(0, 6);
  for (let i = 0; i < nlocks; i++) {
    const d = rng.pick(fds);
    const kind = rng.weighted([[4, 'POSIX'], [3, 'OFD'], [2, 'FLOCK'], [1, 'LEASE']] as const);
    const whole = kind === 'FLOCK' || kind === 'LEASE' || rng.chance(0.4);
    const start = whole ? 0n : BigInt(rng.int(0, 1 << 20));
    const end: bigint | 'EOF' = whole || rng.chance(0.3) ? 'EOF' : start + BigInt(rng.int(0, 4096));
    locks.push({ kind, type: rng.chance(0.5) ? 'READ' : 'WRITE', start, end, pid: d.pid, fd: d.fd, fileId: d.fileId });
  }
  return {
    formatVersion: 1, createdAt: '2026-11-26T23:00:00.000Z', method: rng.chance(0.8) ? 'fdinfo' : 'proc-locks',
    source: { hostname: 'node-a', kernel: '6.18.44', rootPid: rng.chance(0.9) ? pids[0]! : 1, ...(rng.chance(0.5) ? { pod: { namespace: 'ns', name: 'db-0', uid: 'u-1' } } : {}) },
    processes, files, fds, locks,
    skipped: rng.chance(0.2) ? [{ pid: pids[0]!, fd: 99, target: 'socket:[1234]', reason: 'socket', message: 'a socket', locked: false }] : [],
  };
}

// ---- huge and file-system cases

function huge(rng: Rng, fx: Fixture, notes: string[]): LooseCheckpoint {
  const base = looseFromModel(randomModel(rng, fx));
  const n = rng.int(20_000, 35_000);
  const what = rng.pick(['processes', 'locks', 'files', 'fds'] as const);
  notes.push(`huge: ${n} ${what}`);
  const f0 = base.files[0]!;
  const d0 = base.fds.find((d) => d.fileId === f0.id)!;
  switch (what) {
    case 'processes': {
      // a pre-fork server: n workers each holding fd 3 on the same description, one shared fdinfo image
      const first = base.processes[0]!;
      base.processes = Array.from({ length: n }, (_, i) => ({ ...first, pid: 10 + i }));
      base.fdinfoImage = new Map(base.processes.map((p) => [p.pid, 'fdinfo-shared.img']));
      base.files = [f0];
      base.fds = base.processes.map((p) => ({ pid: p.pid, fd: 3n, fileId: f0.id, flags: 0n, type: 1n }));
      base.locks = [{ flag: 4n, type: 1n, pid: 10n, fd: 3n, start: 0n, len: 0n }];
      // the shared image holds the fds of one process; the manifest counts what the reader will see
      break;
    }
    case 'locks':
      base.locks = Array.from({ length: n }, (_, i) => ({ flag: 1n, type: 0n, pid: BigInt(d0.pid), fd: d0.fd, start: BigInt(i * 2), len: 1n }));
      break;
    case 'files': {
      const pid = base.processes[0]!.pid;
      base.files = Array.from({ length: n }, (_, i) => ({ ...f0, id: BigInt(i + 1) }));
      base.fds = base.files.map((f, i) => ({ pid, fd: BigInt(3 + i), fileId: f.id, flags: 0n, type: 1n }));
      base.locks = base.fds.slice(0, 1000).map((d) => ({ flag: 4n, type: 1n, pid: BigInt(pid), fd: d.fd, start: 0n, len: 0n }));
      break;
    }
    case 'fds': {
      const pid = base.processes[0]!.pid;
      base.files = [f0];
      base.fds = Array.from({ length: n }, (_, i) => ({ pid, fd: BigInt(3 + i), fileId: f0.id, flags: 0n, type: 1n }));
      base.locks = [{ flag: 2n, type: 1n, pid: BigInt(pid), fd: 3n, start: 0n, len: 0n }];
      break;
    }
  }
  return base;
}

function renderHuge(c: LooseCheckpoint): Map<string, Buffer> {
  const d = draftOf(c);
  if (c.fdinfoImage && [...c.fdinfoImage.values()].every((v) => v === 'fdinfo-shared.img')) {
    // every process reads the same image: one fd 3 entry, so the reader sees one fd per process
    d.images.set('fdinfo-shared.img', { magic: 0x56213732, entries: [[{ num: 1, wt: 0, value: c.files[0]!.id }, { num: 2, wt: 0, value: 0n }, { num: 3, wt: 0, value: 1n }, { num: 4, wt: 0, value: 3n }]] });
  }
  return render(d);
}

function fsCase(rng: Rng, files: Map<string, CaseFile>, fx: Fixture, notes: string[]): void {
  const names = [...files.keys()];
  const name = rng.chance(0.3) ? 'manifest.json' : rng.pick(names);
  const sp: Special = rng.weighted([
    [3, { special: 'fifo' }], [2, { special: 'dir' }], [2, { special: 'symlink', target: '/dev/zero' }],
    [2, { special: 'symlink', target: `${fx.base}/root/secret/canary-direct` }], [1, { special: 'symlink', target: '/dev/urandom' }],
    [1, { special: 'symlink', target: name }], [2, { special: 'sparse', size: rng.pick([1 << 30, 2 ** 40, 2 ** 33 + 7]) }],
  ] as const);
  files.set(name, sp);
  notes.push(`${name} is ${JSON.stringify(sp)}`);
}

// ---- the case

function pickFamily(rng: Rng): Family {
  return rng.weighted(FAMILIES.map(([f, w]) => [w, f] as const));
}

/** The family makeCase(seed, index) will choose, without generating the case. */
export function familyOf(seed: string, index: number): Family {
  return pickFamily(new Rng(seed, index));
}

/** Which fixture a case index restores against: one case in four uses `--root /` (host paths). */
export function modeFor(index: number): 'in-root' | 'host' {
  return index % 4 === 3 ? 'host' : 'in-root';
}

export function makeCase(seed: string, index: number, fx: Fixture, opts: { family?: Family; fdOffset?: number } = {}): FuzzCase {
  const rng = new Rng(seed, index);
  const family: Family = opts.family ?? pickFamily(rng);
  const notes: string[] = [];
  let files: Map<string, CaseFile>;
  const model = () => randomModel(rng, fx, { fdOffset: opts.fdOffset ?? 0 });
  switch (family) {
    case 'valid':
      files = render(draftOf(looseFromModel(model())));
      break;
    case 'bytes': case 'bytes-resealed': {
      const f = render(draftOf(looseFromModel(model())));
      const imgs = [...f.keys()].filter((n) => n.endsWith('.img'));
      const name = family === 'bytes' && rng.chance(0.25) ? 'manifest.json' : rng.pick(imgs);
      f.set(name, mutateBytes(rng, f.get(name)!, notes));
      notes.unshift(`file ${name}`);
      if (family === 'bytes-resealed') reseal(f, [name]);
      files = f;
      break;
    }
    case 'truncate': {
      const f = render(draftOf(looseFromModel(model())));
      const name = rng.pick([...f.keys()].filter((n) => n.endsWith('.img')));
      const b = f.get(name)!;
      const cut = Math.max(0, Math.min(b.length, rng.pick(boundaries(b)) + rng.int(-2, 2)));
      f.set(name, b.subarray(0, cut));
      notes.push(`${name} cut at ${cut} of ${b.length}`);
      if (rng.chance(0.75)) reseal(f, [name]);
      files = f;
      break;
    }
    case 'proto': {
      const d = draftOf(looseFromModel(model()));
      mutateEntries(rng, d, notes);
      files = render(d);
      break;
    }
    case 'absurd': {
      const c = looseFromModel(model());
      absurd(rng, c, notes);
      const d = draftOf(c);
      if (rng.chance(0.2)) (d.manifest.counts as Record<string, number>).fds += rng.pick([1, -1]);
      files = render(d);
      break;
    }
    case 'manifest': {
      const d = draftOf(looseFromModel(model()));
      const f = render(d);
      if (rng.chance(0.65)) {
        const m = JSON.parse(f.get('manifest.json')!.toString('utf8')) as Record<string, Json>;
        mutateManifestObject(rng, m, notes);
        let text: string;
        // compact: indenting 3,000 nesting levels would make a 17 MB file
        try { text = JSON.stringify(m); } catch { text = JSON.stringify({ unserialisable: true }); }
        f.set('manifest.json', Buffer.from(text));
      } else {
        f.set('manifest.json', mutateManifestText(rng, f.get('manifest.json')!, notes));
      }
      files = f;
      break;
    }
    case 'paths': {
      const c = looseFromModel(randomModel(rng, fx, { hostilePaths: 1, fdOffset: opts.fdOffset ?? 0 }));
      const all = recordedPaths(fx);
      const n = rng.int(1, Math.min(3, c.files.length));
      for (let i = 0; i < n; i++) {
        const f = c.files[i]!;
        f.path = rng.pick(all);
        notes.push(`file ${f.id} path ${JSON.stringify(Buffer.isBuffer(f.path) ? f.path.toString('hex') : f.path)}`);
      }
      files = render(draftOf(c));
      break;
    }
    case 'huge':
      files = renderHuge(huge(rng, fx, notes));
      break;
    case 'fs': {
      files = render(draftOf(looseFromModel(model())));
      fsCase(rng, files, fx, notes);
      break;
    }
  }
  return { seed, index, family, notes, files };
}

/** JSON form of a case for the failure file (buffers as base64). */
export function caseToJson(c: FuzzCase): unknown {
  return {
    seed: c.seed, index: c.index, family: c.family, notes: c.notes,
    files: Object.fromEntries([...c.files].map(([n, v]) => [n, Buffer.isBuffer(v) ? { base64: v.toString('base64') } : v])),
  };
}
