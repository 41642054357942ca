/**
 * A bounded tar reader (POSIX ustar and pax, GNU long names and base-256 sizes: what Go's
 * archive/tar — CRI-O, Podman, containerd — and GNU tar write). It only reads: entries are
 * handed to the caller, who may take the data of a few small ones into memory; nothing is
 * ever created on disk, so a name, link or device entry cannot reach outside anything.
 *
 * Refused with an ImageError naming the archive, the entry and its header offset:
 *   - a bad header checksum, a size that is not a number, data cut short (TRUNCATED);
 *   - an absolute entry name, or one with a `..` component (path traversal);
 *   - pax/GNU extension headers over 1 MiB, a global pax header that sets path or size;
 *   - more than `maxEntries` entries.
 * Why not an npm tar library: node-tar and tar-stream are built to extract (and so to defend
 * extraction); this needs ~230 lines that never write, with limits that fit checkpoints.
 */
import { ImageError } from '../errors.js';
import type { ByteSource } from './bytes.js';

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'device' | 'fifo' | 'sparse' | 'other';

export interface TarEntry {
  /** normalised: no leading "./", no empty or "." components; "" for the archive root */
  readonly name: string;
  readonly type: TarEntryType;
  readonly typeflag: string;
  readonly size: number;
  readonly mode: number;
  readonly mtime: Date;
  readonly linkname: string;
  /** byte offset of the entry's (first) header in the tar data */
  readonly offset: number;
}

export interface TarLimits {
  readonly maxEntries: number;
}
export const DEFAULT_TAR_LIMITS: TarLimits = { maxEntries: 1_000_000 };

const BLOCK = 512;
const MAX_EXT_HEADER = 1 << 20;

function cstr(b: Buffer, start: number, len: number): string {
  const s = b.subarray(start, start + len);
  const z = s.indexOf(0);
  return (z >= 0 ? s.subarray(0, z) : s).toString('utf8');
}

/** Octal ASCII (NUL/space padded) or GNU base-256 (high bit set); null when malformed. */
export function parseNumeric(b: Buffer, start: number, len: number): number | null {
  const f = b.subarray(start, start + len);
  if (f[0]! & 0x80) {
    if (f[0] === 0xff) return null; // negative
    let v = BigInt(f[0]! & 0x7f);
    for (let i = 1; i < f.length; i++) v = (v << 8n) | BigInt(f[i]!);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : null;
  }
  const s = f.toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) return null;
  const v = parseInt(s, 8);
  return Number.isSafeInteger(v) ? v : null;
}

function checksumOk(h: Buffer): boolean {
  const want = parseNumeric(h, 148, 8);
  if (want === null) return false;
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return want === unsigned || want === signed;
}

/** Name rules: refuse absolute names and `..`; drop "./", "." and empty components. Returns null when refused. */
export function normalizeName(raw: string): string | null {
  if (raw.includes('\0')) return null;
  if (raw.startsWith('/')) return null;
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.some((p) => p === '..')) return null;
  return parts.join('/');
}

function typeOf(flag: string): TarEntryType {
  switch (flag) {
    case '0': case '\0': case '7': return 'file';
    case '5': return 'dir';
    case '2': return 'symlink';
    case '1': return 'hardlink';
    case '3': case '4': return 'device';
    case '6': return 'fifo';
    case 'S': return 'sparse';
    default: return 'other';
  }
}

/** "len key=value\n" records of a pax header. */
function parsePax(data: Buffer, bad: (msg: string) => never): Map<string, string> {
  const out = new Map<string, string>();
  let off = 0;
  while (off < data.length) {
    if (data[off] === 0) break;
    const sp = data.indexOf(0x20, off);
    if (sp < 0 || sp - off > 20) bad('malformed pax record length');
    const len = Number(data.subarray(off, sp).toString('latin1'));
    if (!Number.isInteger(len) || len <= sp - off + 1 || off + len > data.length) bad('malformed pax record length');
    const rec = data.subarray(sp + 1, off + len - 1).toString('utf8');
    if (data[off + len - 1] !== 0x0a) bad('pax record is not newline-terminated');
    const eq = rec.indexOf('=');
    if (eq <= 0) bad('malformed pax record');
    out.set(rec.slice(0, eq), rec.slice(eq + 1));
    off += len;
  }
  return out;
}

/**
 * Walk the archive. `visit` is called for every entry (extension headers are applied, not
 * shown); if it returns a byte limit, the entry's data (at most that many bytes, else an
 * error) is read and passed to `onData`; otherwise the data is skipped.
 */
export async function walkTar(
  src: ByteSource, file: string,
  visit: (e: TarEntry) => number | null,
  onData: (e: TarEntry, data: Buffer) => void,
  limits: TarLimits = DEFAULT_TAR_LIMITS,
): Promise<{ entries: number }> {
  let entries = 0;
  let longName: string | null = null;
  let longLink: string | null = null;
  let pax: Map<string, string> | null = null;
  let extStart = -1;
  for (;;) {
    const at = src.offset;
    const h = await src.read(BLOCK);
    if (h.length === 0 && at === 0) throw new ImageError('TRUNCATED', file, 'is empty: not a tar archive', 0);
    // data that ends exactly at a header boundary, without the end-of-archive blocks, is read
    // as Go's archive/tar reads it: the end (a cut-off archive then lacks entries, and says so)
    if (h.length === 0 && longName === null && longLink === null && pax === null) return { entries };
    if (h.length < BLOCK) throw new ImageError('TRUNCATED', file, `ends inside a tar header (${h.length} of ${BLOCK} bytes)`, at);
    if (h.every((x) => x === 0)) {
      if (longName !== null || longLink !== null || pax !== null) throw new ImageError('TRUNCATED', file, 'ends after an extension header, before its entry', at);
      return { entries }; // end-of-archive marker (the second zero block and any padding are not needed)
    }
    const bad = (msg: string, code: 'INVALID' | 'TRUNCATED' = 'INVALID'): never => {
      throw new ImageError(code, file, `tar entry ${entries + 1}: ${msg}`, extStart >= 0 ? extStart : at);
    };
    if (!checksumOk(h)) {
      if (at === 0) throw new ImageError('BAD_MAGIC', file, 'is not a tar archive (no valid tar header at the start; lockmig reads tar, tar.gz and tar.zst)', 0);
      bad('header checksum mismatch (corrupt archive)');
    }
    const flag = String.fromCharCode(h[156]!);
    const size = parseNumeric(h, 124, 12);
    if (size === null) bad('size field is not a number');
    const padded = Math.ceil(size! / BLOCK) * BLOCK;

    // extension headers: their data describes the next header
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      if (extStart < 0) extStart = at;
      if (size! > MAX_EXT_HEADER) bad(`${flag === 'x' || flag === 'g' ? 'pax' : 'GNU long name'} header of ${size} bytes exceeds ${MAX_EXT_HEADER}`);
      const data = await src.read(padded);
      if (data.length < padded) bad('archive ends inside an extension header', 'TRUNCATED');
      const body = data.subarray(0, size!);
      if (flag === 'L') longName = cstr(body, 0, body.length);
      else if (flag === 'K') longLink = cstr(body, 0, body.length);
      else {
        const recs = parsePax(body, bad);
        if (flag === 'g') {
          if (recs.has('path') || recs.has('size') || recs.has('linkpath')) bad('global pax header sets path, linkpath or size (ambiguous archive)');
        } else {
          pax = new Map([...(pax ?? []), ...recs]);
        }
      }
      continue;
    }

    if (++entries > limits.maxEntries) bad(`more than ${limits.maxEntries} entries`);
    const magic = h.subarray(257, 263).toString('latin1');
    const ustar = magic === 'ustar\0';
    let name = cstr(h, 0, 100);
    if (ustar) {
      const prefix = cstr(h, 345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    let linkname = cstr(h, 157, 100);
    let realSize = size!;
    if (longName !== null) name = longName;
    if (longLink !== null) linkname = longLink;
    if (pax) {
      if (pax.has('path')) name = pax.get('path')!;
      if (pax.has('linkpath')) linkname = pax.get('linkpath')!;
      if (pax.has('size')) {
        const s = pax.get('size')!;
        if (!/^\d{1,16}$/.test(s) || !Number.isSafeInteger(Number(s))) bad(`pax size ${JSON.stringify(s)} is not a number`);
        realSize = Number(s);
      }
    }
    const norm = normalizeName(name);
    if (norm === null) {
      bad(`${name.startsWith('/') ? 'absolute' : 'unsafe'} entry name ${JSON.stringify(name)}: refusing an archive with path traversal`);
    }
    const mtime = parseNumeric(h, 136, 12);
    const entry: TarEntry = {
      name: norm!, type: typeOf(flag), typeflag: flag, size: realSize,
      mode: parseNumeric(h, 100, 8) ?? 0, mtime: new Date((mtime ?? 0) * 1000), linkname, offset: extStart >= 0 ? extStart : at,
    };
    longName = null; longLink = null; pax = null; extStart = -1;

    // only regular data follows a header (a hard link's or directory's size is not data)
    const dataBytes = entry.type === 'file' || entry.type === 'sparse' || entry.type === 'other' ? realSize : 0;
    const dataPadded = entry.type === 'sparse' ? padded : Math.ceil(dataBytes / BLOCK) * BLOCK;
    const want = visit(entry);
    if (want !== null && dataBytes > 0) {
      if (dataBytes > want) bad(`${JSON.stringify(entry.name)} is ${dataBytes} bytes, more than the ${want}-byte limit for it`);
      const data = await src.read(dataPadded);
      if (data.length < dataBytes) bad(`archive ends inside ${JSON.stringify(entry.name)} (${data.length} of ${dataBytes} bytes)`, 'TRUNCATED');
      onData(entry, data.subarray(0, dataBytes));
    } else {
      if (want !== null) onData(entry, Buffer.alloc(0));
      const skipped = await src.skip(dataPadded);
      if (skipped < dataBytes) bad(`archive ends inside ${JSON.stringify(entry.name)} (${skipped} of ${dataBytes} bytes)`, 'TRUNCATED');
    }
  }
}
