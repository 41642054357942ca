/**
 * The mutation operators of the image fuzzer (see image-cases.ts for how cases use them): byte
 * level, protobuf field level (written by protowire.ts, not protobufjs), semantically absurd
 * values in a loose model, and manifest.json as an object or as raw text. Each operator appends
 * what it did to `notes`, for the failure report.
 */
import { Rng } from './rng.js';
import type { Draft, LooseCheckpoint } from './image-encode.js';
import { fdinfoName } from './image-encode.js';
import { WT, overlongVarint, varint, type Field, type WireType } from './protowire.js';

// ---- interesting numbers

export const U32_EDGE = [0n, 1n, 2n, 3n, 0x7fffffffn, 0x80000000n, 0xfffffffen, 0xffffffffn, 1n << 32n, (1n << 32n) + 3n, (1n << 64n) - 1n];
export const I32_EDGE = [-1n, -2n, -(1n << 31n), (1n << 31n) - 1n, 1n << 31n, 0n, 1n, 3n, 1n << 32n];
export const I64_EDGE = [0n, 1n, -1n, (1n << 63n) - 1n, (1n << 63n) - 2n, 1n << 63n, (1n << 64n) - 1n, 1n << 62n, -(1n << 63n), (1n << 53n) + 1n];
/** fd numbers around RLIMIT_NOFILE and the kernel's nr_open, and the int32 edge */
export const FD_EDGE = [0n, 1n, 2n, 1023n, 1024n, 19999n, 20000n, 65535n, 65536n, 1048575n, 1048576n, (1n << 30n), 0x7ffffffen, 0x7fffffffn, 0x80000000n, 0xffffffffn];

export function pickBig(rng: Rng, edges: readonly bigint[]): bigint {
  return rng.chance(0.85) ? rng.pick(edges) : rng.bigBits(rng.pick([8, 16, 31, 32, 33, 63, 64]));
}

// ---- byte-level mutations

export function mutateBytes(rng: Rng, b: Buffer, notes: string[]): Buffer {
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

export function mutateEntries(rng: Rng, d: Draft, notes: string[]): string {
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

export function absurd(rng: Rng, c: LooseCheckpoint, notes: string[]): void {
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

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

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

export function mutateManifestObject(rng: Rng, m: Record<string, Json>, notes: string[]): void {
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

export function mutateManifestText(rng: Rng, b: Buffer, notes: string[]): Buffer {
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

