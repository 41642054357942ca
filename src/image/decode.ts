/**
 * Direct, strict decoders for the three CRIU messages lockmig reads back (file_lock_entry,
 * file_entry with reg_file_entry and fown_entry, fdinfo_entry): the counterpart of encode.ts.
 *
 * protobufjs used to decode them. Loading it and letting it generate its decoders cost the
 * restore shim 60–90 ms before the first lock (a third of its whole start-up), and decoding
 * a 2,000-lock checkpoint another 50–70 ms. These are a few dozen lines of wire format.
 * protobufjs stays the reference: test/image/decode.test.ts decodes the same bytes (valid
 * images, images with fields written by CRIU itself that lockmig does not know, and mutated
 * ones) with both and requires the same values wherever these accept the input.
 *
 * Stricter than protobufjs on purpose, since an image comes from elsewhere: a known field with
 * the wrong wire type, a length or varint running past its message, a group or an invalid
 * wire type, and a missing required field are errors (protobufjs reads some of these as
 * defaults or garbage). Unknown fields with wire types 0, 1, 2 and 5 are skipped (CRIU writes
 * more fields than lockmig uses); the last occurrence of a field wins, as in protobuf.
 *
 * Values: uint32/int32/enum as numbers (a longer varint keeps its low 32 bits, as every
 * protobuf parser does), int64/uint64 as exact bigints, sint32 zigzag-decoded, strings UTF-8.
 */

/** A decode failure; the message names the message type, field and byte offset within the entry. */
export class DecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecodeError';
  }
}

class Reader {
  pos: number;
  constructor(readonly buf: Buffer, start: number, readonly end: number, readonly what: string) {
    this.pos = start;
  }

  fail(why: string): never {
    throw new DecodeError(`${this.what}: ${why} at byte ${this.pos}`);
  }

  /** a varint as bigint (up to 10 bytes, 64 bits), assembled from two 32-bit halves */
  varint64(): bigint {
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail('varint runs past the end');
      const b = this.buf[this.pos++]!;
      const v = b & 0x7f;
      if (i < 4) lo |= v << (7 * i);
      else if (i === 4) { lo |= v << 28; hi |= v >>> 4; }
      else hi |= v << (7 * i - 32);
      if (b < 0x80) return hi === 0 ? BigInt(lo >>> 0) : (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
    }
    return this.fail('varint longer than 10 bytes');
  }

  /** a varint's low 32 bits, unsigned (the common case without BigInt) */
  uint32(): number {
    let v = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail('varint runs past the end');
      const b = this.buf[this.pos++]!;
      if (i < 5) v = (v | ((b & 0x7f) << (7 * i))) >>> 0;
      if (b < 0x80) return v;
    }
    return this.fail('varint longer than 10 bytes');
  }

  /** a length-delimited field: returns [start, end) of its bytes */
  bytes(): [number, number] {
    const len = this.uint32();
    const start = this.pos;
    if (len > this.end - start) this.fail(`length ${len} runs past the end`);
    this.pos = start + len;
    return [start, start + len];
  }

  skip(wire: number): void {
    switch (wire) {
      case 0: this.uint32(); return;
      case 1: if (this.end - this.pos < 8) this.fail('fixed64 runs past the end'); this.pos += 8; return;
      case 2: this.bytes(); return;
      case 5: if (this.end - this.pos < 4) this.fail('fixed32 runs past the end'); this.pos += 4; return;
      default: this.fail(`invalid wire type ${wire}`);
    }
  }
}

/** The next tag's field number and wire type; `want` checks the wire type of a known field. */
function field(r: Reader, msg: string, names: readonly string[], wants: readonly (number | undefined)[]): number {
  const tag = r.uint32();
  const id = tag >>> 3;
  const wire = tag & 7;
  if (id === 0) r.fail(`field number 0 in ${msg}`);
  const want = wants[id];
  if (want === undefined) { r.skip(wire); return 0; }
  if (wire !== want) r.fail(`${msg}.${names[id]} has wire type ${wire}, expected ${want}`);
  return id;
}

function missing(msg: string, names: readonly string[], seen: number, required: number): never {
  for (let id = 1; id < names.length; id++) {
    if ((required & (1 << id)) !== 0 && (seen & (1 << id)) === 0) throw new DecodeError(`${msg}: missing required field '${names[id]}'`);
  }
  throw new DecodeError(`${msg}: missing required field`);
}

const zigzag = (v: number): number => (v >>> 1) ^ -(v & 1);

// Field names and wire types by field number (images/*.proto); `required` has bit n for field n.

/** images/file-lock.proto */
const LOCK_NAMES = ['', 'flag', 'type', 'pid', 'fd', 'start', 'len'];
const LOCK_WIRES = [undefined, 0, 0, 0, 0, 0, 0];
const LOCK_REQUIRED = 0b1111110;

function decodeLock(r: Reader): Record<string, unknown> {
  const m = { flag: 0, type: 0, pid: 0, fd: 0, start: 0n, len: 0n };
  let seen = 0;
  while (r.pos < r.end) {
    const id = field(r, 'file_lock_entry', LOCK_NAMES, LOCK_WIRES);
    seen |= 1 << id;
    switch (id) {
      case 1: m.flag = r.uint32(); break;
      case 2: m.type = r.uint32(); break;
      case 3: m.pid = r.uint32() | 0; break;
      case 4: m.fd = r.uint32() | 0; break;
      case 5: m.start = BigInt.asIntN(64, r.varint64()); break;
      case 6: m.len = BigInt.asIntN(64, r.varint64()); break;
      default: break;
    }
  }
  if ((seen & LOCK_REQUIRED) !== LOCK_REQUIRED) missing('file_lock_entry', LOCK_NAMES, seen, LOCK_REQUIRED);
  return m;
}

/** images/fown.proto */
const FOWN_NAMES = ['', 'uid', 'euid', 'signum', 'pid_type', 'pid'];
const FOWN_WIRES = [undefined, 0, 0, 0, 0, 0];
const FOWN_REQUIRED = 0b111110;

function decodeFown(r: Reader): Record<string, unknown> {
  const m = { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 };
  let seen = 0;
  while (r.pos < r.end) {
    const id = field(r, 'reg_file_entry.fown', FOWN_NAMES, FOWN_WIRES);
    seen |= 1 << id;
    switch (id) {
      case 1: m.uid = r.uint32(); break;
      case 2: m.euid = r.uint32(); break;
      case 3: m.signum = r.uint32(); break;
      case 4: m.pid_type = r.uint32(); break;
      case 5: m.pid = r.uint32(); break;
      default: break;
    }
  }
  if ((seen & FOWN_REQUIRED) !== FOWN_REQUIRED) missing('fown_entry', FOWN_NAMES, seen, FOWN_REQUIRED);
  return m;
}

/** images/regfile.proto (the fields lockmig uses; CRIU's others are skipped) */
const REG_NAMES = ['', 'id', 'flags', 'pos', '', 'fown', 'name', 'mnt_id'];
const REG_WIRES = [undefined, 0, 0, 0, undefined, 2, 2, 0];
const REG_REQUIRED = 0b1101110;

function decodeReg(r: Reader): Record<string, unknown> {
  const m: { id: number; flags: number; pos: bigint; fown: Record<string, unknown> | null; name: string; mnt_id: number } = {
    id: 0, flags: 0, pos: 0n, fown: null, name: '', mnt_id: 0,
  };
  let seen = 0;
  while (r.pos < r.end) {
    const id = field(r, 'file_entry.reg', REG_NAMES, REG_WIRES);
    seen |= 1 << id;
    switch (id) {
      case 1: m.id = r.uint32(); break;
      case 2: m.flags = r.uint32(); break;
      case 3: m.pos = r.varint64(); break;
      case 5: { const [a, b] = r.bytes(); m.fown = decodeFown(new Reader(r.buf, a, b, 'reg_file_entry.fown')); break; }
      case 6: { const [a, b] = r.bytes(); m.name = r.buf.toString('utf8', a, b); break; }
      case 7: m.mnt_id = zigzag(r.uint32()); break;
      default: break;
    }
  }
  if ((seen & REG_REQUIRED) !== REG_REQUIRED) missing('reg_file_entry', REG_NAMES, seen, REG_REQUIRED);
  return m;
}

/** images/fdinfo.proto file_entry (only the REG member; type is the fd_types enum) */
const FILE_NAMES = ['', 'type', 'id', 'reg'];
const FILE_WIRES = [undefined, 0, 0, 2];
const FILE_REQUIRED = 0b110;

function decodeFile(r: Reader): Record<string, unknown> {
  const m: { type: number; id: number; reg: Record<string, unknown> | null } = { type: 0, id: 0, reg: null };
  let seen = 0;
  while (r.pos < r.end) {
    const id = field(r, 'file_entry', FILE_NAMES, FILE_WIRES);
    seen |= 1 << id;
    switch (id) {
      case 1: m.type = r.uint32(); break;
      case 2: m.id = r.uint32(); break;
      case 3: { const [a, b] = r.bytes(); m.reg = decodeReg(new Reader(r.buf, a, b, 'file_entry.reg')); break; }
      default: break;
    }
  }
  if ((seen & FILE_REQUIRED) !== FILE_REQUIRED) missing('file_entry', FILE_NAMES, seen, FILE_REQUIRED);
  return m;
}

/** images/fdinfo.proto fdinfo_entry (type is the fd_types enum) */
const FDINFO_NAMES = ['', 'id', 'flags', 'type', 'fd'];
const FDINFO_WIRES = [undefined, 0, 0, 0, 0];
const FDINFO_REQUIRED = 0b11110;

function decodeFdinfo(r: Reader): Record<string, unknown> {
  const m = { id: 0, flags: 0, type: 0, fd: 0 };
  let seen = 0;
  while (r.pos < r.end) {
    const id = field(r, 'fdinfo_entry', FDINFO_NAMES, FDINFO_WIRES);
    seen |= 1 << id;
    switch (id) {
      case 1: m.id = r.uint32(); break;
      case 2: m.flags = r.uint32(); break;
      case 3: m.type = r.uint32(); break;
      case 4: m.fd = r.uint32(); break;
      default: break;
    }
  }
  if ((seen & FDINFO_REQUIRED) !== FDINFO_REQUIRED) missing('fdinfo_entry', FDINFO_NAMES, seen, FDINFO_REQUIRED);
  return m;
}

/** A message type that decodeImage (criu.ts) can decode with: its name and a decoder. */
export interface MessageType {
  readonly name: string;
  decode(bytes: Buffer): Record<string, unknown>;
}

function messageType(name: string, decode: (r: Reader) => Record<string, unknown>): MessageType {
  return { name, decode: (bytes) => decode(new Reader(bytes, 0, bytes.length, name)) };
}

export const FileLockEntry: MessageType = messageType('file_lock_entry', decodeLock);
export const FileEntry: MessageType = messageType('file_entry', decodeFile);
export const FdinfoEntry: MessageType = messageType('fdinfo_entry', decodeFdinfo);
