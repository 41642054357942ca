/**
 * LOCKMIG_FDS: how the restore shim tells the program it execs which descriptors it
 * inherited and which locks sit on them.
 *
 * Format (version 1), chosen to be parsed with strtok/sscanf in C as easily as in TS:
 *
 *     LOCKMIG_FDS=<entry>;<entry>;…
 *     <entry>    = <fd>:<kind>:<type>:<start>:<end>:<path>
 *     fd         = decimal fd number in the exec'd process
 *     kind       = OFD | FLOCK | POSIX | NONE   (NONE: the fd shares a locked description
 *                                               or was recorded, but carries no lock itself)
 *     type       = READ | WRITE                 ('-' for NONE; for FLOCK READ=LOCK_SH, WRITE=LOCK_EX)
 *     start      = decimal byte offset (up to 2^63-1; parse as 64-bit) ('-' for NONE)
 *     end        = inclusive decimal end offset, or EOF ('-' for NONE)
 *     path       = the recorded path, percent-encoded: every byte of its UTF-8 form other
 *                  than A-Z a-z 0-9 - . _ ~ / is written %XX (so ':' ';' '%' spaces and
 *                  newlines never appear raw)
 *
 * One entry per (fd, lock); an fd holding several locks (OFD ranges) appears several
 * times; an fd with no lock appears once with kind NONE. Entries are sorted by fd.
 * An empty value means "no inherited descriptors". LOCKMIG_FDS_VERSION=1 is set alongside.
 *
 * Example: `3:OFD:WRITE:0:EOF:/data/app.db;4:FLOCK:READ:0:EOF:/data/my%20dir/lock`
 *
 * Very large lists: the kernel refuses any single environment string over 128 KiB (E2BIG
 * from execve), which a few thousand locked files with long paths exceed. Above
 * MAX_ENV_VALUE the value goes into an inherited memfd instead: LOCKMIG_FDS is then unset and
 * LOCKMIG_FDS_FD=<n> names the fd holding exactly the same text (read it from offset 0, or
 * /proc/self/fd/<n>). `readInheritedFds()` handles both.
 */
import fs from 'node:fs';

export const ENV_FDS = 'LOCKMIG_FDS';
export const ENV_FDS_VERSION = 'LOCKMIG_FDS_VERSION';
export const FDS_FORMAT_VERSION = 1;
/** Name of the variable holding an fd with the list, when it is too large for the environment. */
export const ENV_FDS_FD = 'LOCKMIG_FDS_FD';
/** Largest LOCKMIG_FDS value put in the environment (the kernel's limit per string is 128 KiB). */
export const MAX_ENV_VALUE = 96 * 1024;

export type InheritedKind = 'OFD' | 'FLOCK' | 'POSIX' | 'NONE';

export interface InheritedFd {
  readonly fd: number;
  readonly kind: InheritedKind;
  /** absent for NONE */
  readonly type?: 'READ' | 'WRITE';
  readonly start?: bigint;
  readonly end?: bigint | 'EOF';
  readonly path: string;
}

export class EnvFdsParseError extends Error {
  constructor(readonly index: number, readonly entry: string, reason: string) {
    super(`${ENV_FDS} entry ${index} ${JSON.stringify(entry)}: ${reason}`);
    this.name = 'EnvFdsParseError';
  }
}

const SAFE = /[A-Za-z0-9\-._~/]/;
const ALL_SAFE = /^[A-Za-z0-9\-._~/]*$/;

export function encodePath(p: string): string {
  if (ALL_SAFE.test(p)) return p; // the usual path: nothing to escape
  let out = '';
  for (const b of Buffer.from(p, 'utf8')) {
    const ch = String.fromCharCode(b);
    out += b < 0x80 && SAFE.test(ch) ? ch : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export function decodePath(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25 /* % */) {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw new Error(`bad percent escape at ${i}`);
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else if (c < 0x80) {
      bytes.push(c);
    } else {
      throw new Error(`raw non-ASCII character at ${i}`);
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

export function formatEntry(e: InheritedFd): string {
  if (e.kind === 'NONE') return `${e.fd}:NONE:-:-:-:${encodePath(e.path)}`;
  const end = e.end === 'EOF' ? 'EOF' : String(e.end);
  return `${e.fd}:${e.kind}:${e.type}:${e.start}:${end}:${encodePath(e.path)}`;
}

export function formatFds(entries: readonly InheritedFd[]): string {
  return [...entries].sort((a, b) => a.fd - b.fd).map(formatEntry).join(';');
}

const DEC = /^(0|[1-9][0-9]*)$/;
const INT64_MAX = (1n << 63n) - 1n;

function parseOffset(s: string, what: string, i: number, raw: string): bigint {
  if (!DEC.test(s)) throw new EnvFdsParseError(i, raw, `${what} ${JSON.stringify(s)} is not a decimal number`);
  const v = BigInt(s);
  if (v > INT64_MAX) throw new EnvFdsParseError(i, raw, `${what} exceeds 2^63-1`);
  return v;
}

/** Parse a LOCKMIG_FDS value; throws EnvFdsParseError naming the bad entry. */
export function parseFds(value: string | undefined): InheritedFd[] {
  if (value === undefined || value === '') return [];
  return value.split(';').map((raw, i) => {
    const f = raw.split(':');
    if (f.length !== 6) throw new EnvFdsParseError(i, raw, `expected 6 ':'-separated fields, got ${f.length}`);
    const [fdS, kind, type, startS, endS, pathS] = f as [string, string, string, string, string, string];
    if (!DEC.test(fdS) || Number(fdS) > 0x7fffffff) throw new EnvFdsParseError(i, raw, 'fd is not a non-negative decimal');
    let p: string;
    try { p = decodePath(pathS); } catch (err) { throw new EnvFdsParseError(i, raw, `path: ${(err as Error).message}`); }
    const fd = Number(fdS);
    if (kind === 'NONE') {
      if (type !== '-' || startS !== '-' || endS !== '-') throw new EnvFdsParseError(i, raw, 'NONE entries carry "-" for type, start and end');
      return { fd, kind, path: p };
    }
    if (kind !== 'OFD' && kind !== 'FLOCK' && kind !== 'POSIX') throw new EnvFdsParseError(i, raw, `unknown kind ${JSON.stringify(kind)}`);
    if (type !== 'READ' && type !== 'WRITE') throw new EnvFdsParseError(i, raw, `unknown type ${JSON.stringify(type)}`);
    const start = parseOffset(startS, 'start', i, raw);
    const end = endS === 'EOF' ? 'EOF' as const : parseOffset(endS, 'end', i, raw);
    if (end !== 'EOF' && end < start) throw new EnvFdsParseError(i, raw, 'end is before start');
    return { fd, kind, type, start, end, path: p };
  });
}

/**
 * What this process inherited from the restore shim: LOCKMIG_FDS, or the memfd named by
 * LOCKMIG_FDS_FD for very large lists. Throws EnvFdsParseError on malformed input.
 */
export function readInheritedFds(env: Readonly<Record<string, string | undefined>> = process.env): InheritedFd[] {
  const viaFd = env[ENV_FDS_FD];
  if (viaFd !== undefined && viaFd !== '') {
    const fd = Number(viaFd);
    if (!Number.isInteger(fd) || fd < 0) throw new EnvFdsParseError(0, viaFd, `${ENV_FDS_FD} is not an fd number`);
    const chunks: Buffer[] = [];
    const buf = Buffer.alloc(65536);
    for (let pos = 0; ;) {
      const n = fs.readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      chunks.push(Buffer.from(buf.subarray(0, n)));
      pos += n;
    }
    return parseFds(Buffer.concat(chunks).toString('utf8'));
  }
  return parseFds(env[ENV_FDS]);
}
