/**
 * /proc/<pid>/fdinfo/<fd> (fs/proc/fd.c seq_show, plus fs/locks.c show_fd_locks):
 *
 *   pos:	100
 *   flags:	02100002
 *   mnt_id:	27
 *   ino:	2146451
 *   lock:	1: OFDLCK ADVISORY  WRITE -1 fe:00:2146451 10 29
 *
 * `flags` is octal and includes O_CLOEXEC when the fd is close-on-exec. `lock:` lines list
 * OFD and flock locks on every fd sharing the description, POSIX locks only in the owning
 * process on fds of the description used to set them. Other file types add their own
 * lines (eventfd-count:, tfd:, inotify …); those are kept verbatim in `extra`.
 */
import { ProcParseError } from './errors.js';
import { parseLockLine, type ProcLock } from './lockline.js';

export interface FdInfo {
  readonly pos: bigint;
  readonly flags: number;
  readonly mntId: number;
  /** absent before Linux 5.14 */
  readonly ino: bigint | null;
  readonly locks: readonly ProcLock[];
  /** lines with other keys, verbatim */
  readonly extra: readonly string[];
}


/** The whole file of a plain, unlocked regular file: one regex instead of a line loop. */
const PLAIN_RE = /^pos:\t(\d+)\nflags:\t([0-7]+)\nmnt_id:\t(\d+)\nino:\t(\d+)\n$/;
const NONE: readonly never[] = Object.freeze([]);

/** The usual file of a locked fd: the four lines, then only lock: lines. */
const LOCKED_RE = /^pos:\t(\d+)\nflags:\t([0-7]+)\nmnt_id:\t(\d+)\nino:\t(\d+)\n((?:lock:\t[^\n]*\n)+)$/;

export function parseFdinfo(text: string, source: string): FdInfo {
  const plain = PLAIN_RE.exec(text);
  if (plain) {
    return { pos: BigInt(plain[1]!), flags: parseInt(plain[2]!, 8), mntId: parseInt(plain[3]!, 10), ino: BigInt(plain[4]!), locks: NONE, extra: NONE };
  }
  const locked = LOCKED_RE.exec(text);
  if (locked) {
    const locks: ProcLock[] = [];
    const lines = locked[5]!.split('\n');
    for (let n = 0; n < lines.length - 1; n++) {
      const l = parseLockLine(lines[n]!.slice(6), source, 5 + n);
      if (!l.blocked) locks.push(l);
    }
    return { pos: BigInt(locked[1]!), flags: parseInt(locked[2]!, 8), mntId: parseInt(locked[3]!, 10), ino: BigInt(locked[4]!), locks, extra: NONE };
  }
  let pos: bigint | null = null;
  let flags: number | null = null;
  let mntId: number | null = null;
  let ino: bigint | null = null;
  const locks: ProcLock[] = [];
  const extra: string[] = [];
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!;
    if (line === '') continue;
    // "key:\tvalue" without a regex: this runs once per fd, 10,000 times for a big process
    const colon = line.indexOf(':');
    if (colon <= 0 || line.charCodeAt(0) === 9 || line.lastIndexOf('\t', colon) >= 0) {
      throw new ProcParseError(source, n + 1, line, 'expected "key: value"');
    }
    const key = line.slice(0, colon);
    let vs = colon + 1;
    while (vs < line.length && (line.charCodeAt(vs) === 9 || line.charCodeAt(vs) === 32)) vs++;
    const val = line.slice(vs);
    const bad = (why: string): never => { throw new ProcParseError(source, n + 1, line, why); };
    switch (key) {
      case 'pos':
        if (!/^\d+$/.test(val)) bad('bad pos');
        pos = BigInt(val);
        break;
      case 'flags':
        if (!/^[0-7]+$/.test(val)) bad('bad flags (expected octal)');
        flags = parseInt(val, 8);
        break;
      case 'mnt_id':
        if (!/^\d+$/.test(val)) bad('bad mnt_id');
        mntId = parseInt(val, 10);
        break;
      case 'ino':
        if (!/^\d+$/.test(val)) bad('bad ino');
        ino = BigInt(val);
        break;
      case 'lock': {
        const l = parseLockLine(val, source, n + 1);
        if (!l.blocked) locks.push(l);
        break;
      }
      default:
        extra.push(line);
    }
  }
  if (pos === null || flags === null || mntId === null) {
    throw new ProcParseError(source, lines.length, text.slice(0, 200), 'missing pos:, flags: or mnt_id:');
  }
  return { pos, flags, mntId, ino, locks, extra };
}
