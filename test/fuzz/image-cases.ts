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
import type { Checkpoint, FdRecord, FileRecord, LockKind, LockRecord, ProcessRecord } from '../../src/image/model.js';
import { Rng } from './rng.js';
import { draftOf, looseFromModel, render, reseal, fdinfoName, type Draft, type LooseCheckpoint } from './image-encode.js';
import { WT, boundaries, overlongVarint, varint, type Field, type WireType } from './protowire.js';
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

// ---- interesting numbers

const U32_EDGE = [0n, 1n, 2n, 3n, 0x7fffffffn, 0x80000000n, 0xfffffffen, 0xffffffffn, 1n << 32n, (1n << 32n) + 3n, (1n << 64n) - 1n];
const I32_EDGE = [-1n, -2n, -(1n << 31n), (1n << 31n) - 1n, 1n << 31n, 0n, 1n, 3n, 1n << 32n];
const I64_EDGE = [0n, 1n, -1n, (1n << 63n) - 1n, (1n << 63n) - 2n, 1n << 63n, (1n << 64n) - 1n, 1n << 62n, -(1n << 63n), (1n << 53n) + 1n];
/** fd numbers around RLIMIT_NOFILE and the kernel's nr_open, and the int32 edge */
const FD_EDGE = [0n, 1n, 2n, 1023n, 1024n, 19999n, 20000n, 65535n, 65536n, 1048575n, 1048576n, (1n << 30n), 0x7ffffffen, 0x7fffffffn, 0x80000000n, 0xffffffffn];

function pickBig(rng: Rng, edges: readonly bigint[]): bigint {
  return rng.chance(0.85) ? rng.pick(edges) : rng.bigBits(rng.pick([8, 16, 31, 32, 33, 63, 64]));
}

// ---- a random valid checkpoint

const KINDS: readonly LockKind[] = ['POSIX', 'OFD', 'FLOCK', 'LEASE'];

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
  void KINDS;
  return {
    formatVersion: 1, createdAt: '2026-11-26T23:00:00.000Z', method: rng.chance(0.8) ? 'fdinfo' : 'proc-locks',
    source: { hostname: 'node-a', kernel: '6.18.44', rootPid: rng.chance(0.9) ? pids[0]! : 1, ...(rng.chance(0.5) ? { pod: { namespace: 'ns', name: 'db-0', uid: 'u-1' } } : {}) },
    processes, files, fds, locks,
    skipped: rng.chance(0.2) ? [{ pid: pids[0]!, fd: 99, target: 'socket:[1234]', reason: 'socket', message: 'a socket', locked: false }] : [],
  };
}

// ---- byte-level mutations

function mutateBytes(rng: Rng, b: Buffer, notes: string[]): Buffer {
  const ops = rng.int(1, 3);
  let out = Buffer.from(b);
  for (let k = 0; k < ops; k++) {
    const op = rng.pick(['flip', 'set', 'insert', 'delete', 'dup', 'truncate', 'append', 'zero', 'empty'] as const);
    const pos = out.length ? rng.int(0, out.length - 1) : 0;
    switch (op) {
      case 'flip': {
        if (!out.length) break;
        const bits = rng.int(1, 8);
        for (let i = 0; i < bits; i++) { const p = rng.int(0, out.length - 1); out[p]! ^= 1 << rng.int(0, 7); }
        notes.push(`flip ${bits} bit(s)`);
        break;
      }
      case 'set':
        if (out.length) { out[pos] = rng.pick([0x00, 0xff, 0x7f, 0x80, 0x0a, 0x22, 0x5c]); notes.push(`set byte ${pos}`); }
        break;
      case 'insert': {
        const ins = rng.bytes(rng.int(1, 16));
        out = Buffer.concat([out.subarray(0, pos), ins, out.subarray(pos)]);
        notes.push(`insert ${ins.length} at ${pos}`);
        break;
      }
      case 'delete': {
        const n = rng.int(1, 16);
        out = Buffer.concat([out.subarray(0, pos), out.subarray(pos + n)]);
        notes.push(`delete ${n} at ${pos}`);
        break;
      }
      case 'dup': {
        const n = rng.int(1, 32);
        out = Buffer.concat([out.subarray(0, pos + n), out.subarray(pos, pos + n), out.subarray(pos + n)]);
        notes.push(`duplicate ${n} at ${pos}`);
        break;
      }
      case 'truncate':
        out = out.subarray(0, pos);
        notes.push(`truncate to ${pos}`);
        break;
      case 'append': {
        const g = rng.bytes(rng.int(1, 64));
        out = Buffer.concat([out, g]);
        notes.push(`append ${g.length}`);
        break;
      }
      case 'zero': {
        const n = rng.int(1, 16);
        out.fill(0, pos, Math.min(out.length, pos + n));
        notes.push(`zero ${n} at ${pos}`);
        break;
      }
      case 'empty':
        out = Buffer.alloc(0);
        notes.push('empty');
        break;
    }
  }
  return out;
}

// ---- protobuf-level mutations

function randomField(rng: Rng, depth = 0): Field {
  const num = rng.weighted([[5, rng.int(1, 15)], [3, rng.int(16, 2047)], [1, (1 << 29) - 1], [1, rng.int(19000, 19999)]] as const);
  const wt = rng.weighted([[4, WT.VARINT], [3, WT.LEN], [1, WT.I64], [1, WT.I32], [1, WT.SGROUP], [0.3, WT.EGROUP], [0.3, 6], [0.3, 7]] as const) as WireType;
  if (wt === WT.LEN) return { num, wt, value: depth < 3 && rng.chance(0.4) ? [randomField(rng, depth + 1), randomField(rng, depth + 1)] : rng.bytes(rng.int(0, 40)) };
  if (wt === WT.SGROUP) return { num, wt, value: depth < 3 && rng.chance(0.5) ? [randomField(rng, depth + 1)] : [] };
  return { num, wt, value: pickBig(rng, I64_EDGE) };
}

function mutateFields(rng: Rng, fields: Field[], notes: string[], depth = 0): Field[] {
  const out = [...fields];
  const op = rng.pick(['drop', 'dup', 'wiretype', 'unknown', 'value', 'pad', 'overlong', 'lenbomb', 'nested', 'reorder', 'string', 'clear'] as const);
  const i = out.length ? rng.int(0, out.length - 1) : 0;
  const f = out[i];
  switch (op) {
    case 'drop': if (f) { out.splice(i, 1); notes.push(`drop field ${f.num}`); } break;
    case 'dup': if (f) { out.splice(rng.int(0, out.length), 0, { ...f, value: f.wt === WT.VARINT ? pickBig(rng, U32_EDGE) : f.value }); notes.push(`duplicate field ${f.num}`); } break;
    case 'wiretype': if (f) {
      const wt = rng.pick([0, 1, 2, 3, 5, 6, 7] as const);
      out[i] = { num: f.num, wt, value: wt === WT.LEN ? rng.bytes(rng.int(0, 12)) : wt === WT.SGROUP ? [] : pickBig(rng, U32_EDGE) };
      notes.push(`field ${f.num} wire type ${f.wt}→${wt}`);
    } break;
    case 'unknown': out.splice(rng.int(0, out.length), 0, randomField(rng)); notes.push('unknown field'); break;
    case 'value': if (f && f.wt === WT.VARINT) { const v = pickBig(rng, [...U32_EDGE, ...I64_EDGE]); out[i] = { ...f, value: v }; notes.push(`field ${f.num} = ${v}`); } break;
    case 'pad': if (f && f.wt === WT.VARINT) { const pad = rng.int(1, 6); out[i] = { ...f, pad }; notes.push(`field ${f.num} overlong by ${pad}`); } break;
    case 'overlong': if (f) { out[i] = { num: f.num, wt: WT.VARINT, value: overlongVarint(rng.int(11, 20)) }; notes.push(`field ${f.num} varint over 10 bytes`); } break;
    case 'lenbomb': {
      // a LEN field whose declared length is absurd, followed by a few bytes
      const len = rng.pick([0xffffffffn, 1n << 31n, 1n << 40n, (1n << 64n) - 1n, 100n]);
      const num = BigInt(f?.num ?? 6);
      out.push({ num: 0, wt: 7, raw: true, value: Buffer.concat([varint((num << 3n) | 2n), varint(len), rng.bytes(rng.int(0, 4))]) });
      notes.push(`length bomb ${len}`);
      break;
    }
    case 'nested':
      if (f && Array.isArray(f.value) && depth < 3) { out[i] = { ...f, value: mutateFields(rng, f.value, notes, depth + 1) }; notes.push(`inside field ${f.num}`); }
      else out.push({ num: rng.int(1, 9), wt: WT.LEN, value: [randomField(rng, 1), randomField(rng, 1)] });
      break;
    case 'reorder': out.reverse(); notes.push('reverse field order'); break;
    case 'string': if (f && f.wt === WT.LEN && !Array.isArray(f.value)) {
      const v = rng.pick([
        Buffer.from([0xff, 0xfe, 0xfd]), Buffer.from('/allowed/f1\0/x'), Buffer.alloc(rng.int(4097, 70000), 0x61),
        Buffer.from('\u{10FFFF}\u{D7FF}'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.alloc(0),
      ]);
      out[i] = { ...f, value: v };
      notes.push(`field ${f.num} string of ${v.length} bytes`);
    } break;
    case 'clear': out.length = 0; notes.push('empty message'); break;
  }
  return out;
}

function mutateEntries(rng: Rng, d: Draft, notes: string[]): string {
  const name = rng.pick([...d.images.keys()]);
  const im = d.images.get(name)!;
  notes.push(`image ${name}`);
  const ops = rng.int(1, 3);
  for (let k = 0; k < ops; k++) {
    const r = rng.float();
    if (im.entries.length === 0 || r < 0.12) {
      im.entries.splice(rng.int(0, im.entries.length), 0, rng.chance(0.5) && im.entries.length ? [...im.entries[0]!] : [randomField(rng)]);
      notes.push('extra entry');
    } else if (r < 0.2) {
      im.entries.splice(rng.int(0, im.entries.length - 1), 1);
      notes.push('remove entry');
    } else {
      const i = rng.int(0, im.entries.length - 1);
      im.entries[i] = mutateFields(rng, im.entries[i]!, notes);
    }
  }
  return name;
}

// ---- semantically absurd values

function absurd(rng: Rng, c: LooseCheckpoint, notes: string[]): void {
  const ops = rng.int(1, 3);
  for (let k = 0; k < ops; k++) {
    const op = rng.pick(['fd', 'fd', 'lockfd', 'pid', 'range', 'range', 'flag', 'fileid', 'dupfd', 'orphanlock', 'orphanfd', 'unreferenced', 'flags', 'pos', 'mnt', 'rootpid', 'manyfds', 'sameimage'] as const);
    const d = c.fds.length ? rng.pick(c.fds) : undefined;
    switch (op) {
      case 'fd': if (d) {
        const old = d.fd;
        d.fd = pickBig(rng, FD_EDGE);
        // keep the locks on that fd consistent half of the time, so the value reaches the restore plan
        if (rng.chance(0.6)) for (const l of c.locks) if (l.pid === BigInt(d.pid) && l.fd === old) l.fd = d.fd;
        notes.push(`fd ${old} of pid ${d.pid} → ${d.fd}`);
      } break;
      case 'lockfd': if (c.locks.length) { const l = rng.pick(c.locks); l.fd = pickBig(rng, I32_EDGE); notes.push(`lock fd → ${l.fd}`); } break;
      case 'pid': {
        const p = rng.pick(c.processes);
        const np = Number(pickBig(rng, [0n, 1n, 2n, 0x7fffffffn, 0x80000000n, 4194304n, 4194305n]));
        notes.push(`pid ${p.pid} → ${np}`);
        if (rng.chance(0.6)) {
          for (const x of c.fds) if (x.pid === p.pid) x.pid = np;
          for (const l of c.locks) if (l.pid === BigInt(p.pid)) l.pid = BigInt(np);
          if (c.source.rootPid === p.pid) c.source = { ...c.source, rootPid: np };
        }
        p.pid = np;
        break;
      }
      case 'range': if (c.locks.length) {
        const l = rng.pick(c.locks);
        l.start = pickBig(rng, I64_EDGE);
        l.len = pickBig(rng, I64_EDGE);
        notes.push(`lock range start ${l.start} len ${l.len}`);
      } break;
      case 'flag': if (c.locks.length) {
        const l = rng.pick(c.locks);
        if (rng.chance(0.5)) l.flag = pickBig(rng, [0n, 3n, 5n, 6n, 16n, 32n, 0xffffffffn, 8n]); else l.type = pickBig(rng, [2n, 3n, 0xffffffffn, 128n]);
        notes.push(`lock flag ${l.flag} type ${l.type}`);
      } break;
      case 'fileid': {
        const f = rng.pick(c.files);
        const old = f.id;
        f.id = pickBig(rng, U32_EDGE);
        if (rng.chance(0.6)) for (const x of c.fds) if (x.fileId === old) x.fileId = f.id;
        notes.push(`file id ${old} → ${f.id}`);
        break;
      }
      case 'dupfd': if (d) { c.fds.push({ ...d, fileId: rng.chance(0.5) ? d.fileId : rng.pick(c.files).id }); notes.push(`duplicate fd ${d.fd} of pid ${d.pid}`); } break;
      case 'orphanlock': {
        const pid = rng.pick(c.processes).pid;
        c.locks.push({ flag: 1n, type: 1n, pid: BigInt(pid), fd: pickBig(rng, FD_EDGE), start: 0n, len: 0n });
        notes.push('lock on an fd that no fdinfo holds');
        break;
      }
      case 'orphanfd': if (d) { c.fds.push({ ...d, fd: d.fd + 1000n, fileId: pickBig(rng, U32_EDGE) }); notes.push('fd on a file files.img does not hold'); } break;
      case 'unreferenced': {
        const id = BigInt(c.files.length + 100);
        c.files.push({ ...c.files[0]!, id });
        notes.push('file no fd refers to');
        break;
      }
      case 'flags': { const f = rng.pick(c.files); f.flags = pickBig(rng, U32_EDGE); notes.push(`flags ${f.flags}`); break; }
      case 'pos': { const f = rng.pick(c.files); f.pos = pickBig(rng, I64_EDGE); notes.push(`pos ${f.pos}`); break; }
      case 'mnt': { const f = rng.pick(c.files); f.mntId = rng.pick([-1, -(2 ** 31), 2 ** 31 - 1, 0]); notes.push(`mnt_id ${f.mntId}`); break; }
      case 'rootpid': c.source = { ...c.source, rootPid: rng.pick([0, 1, 2 ** 31, 99999999]) }; notes.push(`rootPid ${c.source.rootPid}`); break;
      case 'manyfds': if (d) {
        const n = rng.int(50, 3000);
        for (let i = 0; i < n; i++) c.fds.push({ ...d, fd: d.fd + BigInt(i + 1) * rng.pick([1n, 7n, 1000n]) });
        notes.push(`${n} more fds`);
      } break;
      case 'sameimage': if (c.processes.length > 1) {
        c.fdinfoImage = new Map(c.processes.map((p) => [p.pid, fdinfoName(c.processes[0]!.pid)]));
        notes.push('all processes share one fdinfo image');
      } break;
    }
  }
}

// ---- manifest mutations

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const HOSTILE_VALUES: readonly (() => Json)[] = [
  () => null, () => true, () => -1, () => 0, () => 1e308, () => 2 ** 53, () => 2 ** 53 + 2, () => 1.5, () => -0, () => '', () => '\0',
  () => '\ud800', () => 'x'.repeat(1 << 20), () => [], () => ({}), () => '12', () => '-1', () => '1e3', () => '0x10',
  () => '99999999999999999999999999999999', () => [null], () => ({ __proto__: null, toString: 'x' } as unknown as Json),
];
const IMAGE_NAMES = ['../x.img', '/etc/passwd', 'a/b.img', '..img', '.img', 'fdinfo-1.img\0', 'manifest.json', 'files.img', 'filelocks.img', 'x.img ', 'X'.repeat(300) + '.img', '%2e%2e/x.img'];

function jsonPaths(v: Json, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => jsonPaths(x, [...at, i], out));
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) jsonPaths(x, [...at, k], out);
  return out;
}

function mutateManifestObject(rng: Rng, m: Record<string, Json>, notes: string[]): void {
  const paths = jsonPaths(m).filter((p) => p.length > 0);
  const p = rng.pick(paths);
  const parent = p.slice(0, -1).reduce<Json>((o, k) => (o as Record<string, Json>)[k as string]!, m) as Record<string, Json> | Json[];
  const key = p[p.length - 1]!;
  const op = rng.pick(['value', 'value', 'delete', 'extra', 'imagename', 'fdinfoimage', 'proto', 'counts', 'version', 'deep'] as const);
  switch (op) {
    case 'value': (parent as Record<string, Json>)[key as string] = rng.pick(HOSTILE_VALUES)(); notes.push(`manifest ${p.join('.')} = hostile value`); break;
    case 'delete':
      if (Array.isArray(parent)) parent.splice(key as number, 1); else delete parent[key as string];
      notes.push(`manifest delete ${p.join('.')}`);
      break;
    case 'extra':
      if (!Array.isArray(parent) && parent !== null && typeof parent === 'object') parent[rng.pick(['unknown', 'constructor', 'toString', 'hasOwnProperty'])] = rng.pick(HOSTILE_VALUES)();
      notes.push('manifest extra key');
      break;
    case 'imagename': {
      const images = m.images as Record<string, Json>;
      const names = Object.keys(images);
      if (names.length) {
        const from = rng.pick(names);
        const to = rng.pick(IMAGE_NAMES);
        images[to] = images[from]!;
        if (rng.chance(0.5)) delete images[from];
        notes.push(`images ${from} → ${JSON.stringify(to)}`);
      }
      break;
    }
    case 'fdinfoimage': {
      const procs = m.processes as { fdinfoImage: Json }[];
      if (procs.length) { const pr = rng.pick(procs); pr.fdinfoImage = rng.pick(IMAGE_NAMES); notes.push(`fdinfoImage ${JSON.stringify(pr.fdinfoImage)}`); }
      break;
    }
    case 'proto':
      // JSON.parse makes "__proto__" an own key; a validator that copies it naively would change prototypes
      (m.images as Record<string, Json>)['__proto__'] = { sha256: 'x', size: 1, entries: 1 };
      notes.push('images.__proto__');
      break;
    case 'counts': (m.counts as Record<string, Json>)[rng.pick(['files', 'fds', 'locks'])] = rng.pick([-1, 2 ** 53, 1e9, 0, 3]); notes.push('counts'); break;
    case 'version': m.formatVersion = rng.pick([0, 2, '1', 1.0000001, null, 1e300]); notes.push(`formatVersion ${String(m.formatVersion)}`); break;
    case 'deep': {
      let v: Json = 1;
      const n = rng.int(100, 3000);
      for (let i = 0; i < n; i++) v = rng.chance(0.5) ? [v] : { a: v };
      (parent as Record<string, Json>)[key as string] = v;
      notes.push(`nesting ${n} deep at ${p.join('.')}`);
      break;
    }
  }
}

function mutateManifestText(rng: Rng, b: Buffer, notes: string[]): Buffer {
  const op = rng.pick(['bom', 'trailing', 'nonutf8', 'truncate', 'dupkey', 'deeptext', 'notobject', 'bytes'] as const);
  const s = b.toString('utf8');
  notes.push(`manifest text ${op}`);
  switch (op) {
    case 'bom': return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), b]);
    case 'trailing': return Buffer.concat([b, Buffer.from(rng.pick(['x', '{}', '\0', ' \n ', ']']))]);
    case 'nonutf8': {
      const at = s.indexOf('"', rng.int(0, Math.max(0, s.length - 1)));
      return at < 0 ? b : Buffer.concat([b.subarray(0, at + 1), Buffer.from([0xff, 0xc3, 0x28, 0xed, 0xa0, 0x80]), b.subarray(at + 1)]);
    }
    case 'truncate': return b.subarray(0, rng.int(0, b.length - 1));
    case 'dupkey': return Buffer.from(s.replace('"formatVersion": 1', '"formatVersion": 1, "formatVersion": 2').replace('"images": {', '"images": {"files.img": {"sha256": "00", "size": 0, "entries": 0},'));
    case 'deeptext': { const n = rng.int(1000, 50_000); return Buffer.from(`{"x":${'['.repeat(n)}${']'.repeat(n)}}`); }
    case 'notobject': return Buffer.from(rng.pick(['[]', '1', '"x"', 'null', 'true', '', ' ', '{}']));
    case 'bytes': return mutateBytes(rng, b, notes);
  }
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

/** Which fixture a case index restores against: one case in four uses `--root /` (host paths). */
export function modeFor(index: number): 'in-root' | 'host' {
  return index % 4 === 3 ? 'host' : 'in-root';
}

export function makeCase(seed: string, index: number, fx: Fixture, opts: { family?: Family; fdOffset?: number } = {}): FuzzCase {
  const rng = new Rng(seed, index);
  const family: Family = opts.family ?? rng.weighted(FAMILIES.map(([f, w]) => [w, f] as const));
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
