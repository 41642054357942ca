/**
 * The lock line format shared by /proc/locks and the `lock:` lines of /proc/<pid>/fdinfo/<fd>
 * (fs/locks.c lock_get_status). Samples:
 *
 *   1: POSIX  ADVISORY  WRITE 2163 fe:00:2146453 0 EOF
 *   3: OFDLCK ADVISORY  READ -1 fe:00:2146451 50 EOF
 *   4: FLOCK  ADVISORY  WRITE 2163 fe:00:2146452 0 EOF
 *   5: LEASE  ACTIVE    READ 2170 fe:00:2146460 0 EOF
 *   6: LEASE  BREAKING  UNLCK 2170 fe:00:2146460 0 EOF
 *   1: -> POSIX  ADVISORY  WRITE 2190 fe:00:2146453 0 EOF     (a blocked waiter, /proc/locks only)
 *
 * Fields: id, kind, mode, type, pid (-1 for OFD locks, 0 when the owner is not visible
 * from the reader's pid namespace), `maj:min:ino` in hex:hex:decimal (or `<none>`),
 * start, and the inclusive end or `EOF`. Offsets are 64-bit: parsed with BigInt only.
 */
import { ProcParseError } from './errors.js';

export type ProcLockKind = 'POSIX' | 'FLOCK' | 'OFDLCK' | 'LEASE' | 'DELEG' | 'ACCESS';
export type ProcLockMode = 'ADVISORY' | 'MANDATORY' | 'ACTIVE' | 'BREAKING' | 'BREAKER' | 'MSNFS';
export type ProcLockType = 'READ' | 'WRITE' | 'UNLCK';

const KINDS: ReadonlySet<string> = new Set<ProcLockKind>(['POSIX', 'FLOCK', 'OFDLCK', 'LEASE', 'DELEG', 'ACCESS']);
const MODES: ReadonlySet<string> = new Set<ProcLockMode>(['ADVISORY', 'MANDATORY', 'ACTIVE', 'BREAKING', 'BREAKER', 'MSNFS']);
const TYPES: ReadonlySet<string> = new Set<ProcLockType>(['READ', 'WRITE', 'UNLCK']);

export interface DevIno {
  readonly major: number;
  readonly minor: number;
  readonly ino: bigint;
}

export interface ProcLock {
  /** the kernel's ordinal for this listing (not stable across reads) */
  readonly id: number;
  readonly kind: ProcLockKind;
  readonly mode: ProcLockMode;
  readonly type: ProcLockType;
  /** owner pid in the reader's pid namespace; -1 for OFD locks; 0 when not visible */
  readonly pid: number;
  /** null when the kernel printed `<none>` (no inode) */
  readonly file: DevIno | null;
  readonly start: bigint;
  /** inclusive end, or 'EOF' */
  readonly end: bigint | 'EOF';
  /** true for a `->` line: a waiter blocked on the lock above it, not a lock */
  readonly blocked: boolean;
}

const INT_RE = /^-?\d+$/;
const UINT_RE = /^\d+$/;
const DEVINO_RE = /^([0-9a-f]+):([0-9a-f]+):(\d+)$/;
const INT64_MAX = (1n << 63n) - 1n;

/**
 * Parse one lock line (without the `lock:\t` prefix of fdinfo). Throws ProcParseError
 * quoting `line` on anything it does not understand.
 */
/** The usual line (not a waiter, with an inode), in one regex: the general parser below handles the rest. */
const COMMON_RE = /^\s*(\d+): (POSIX|FLOCK|OFDLCK|LEASE|DELEG|ACCESS)\s+(ADVISORY|MANDATORY|ACTIVE|BREAKING|BREAKER|MSNFS)\s+(READ|WRITE|UNLCK)\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s+(\d+)\s+(\d+|EOF)\s*$/;

export function parseLockLine(line: string, source: string, lineNo: number): ProcLock {
  const c = COMMON_RE.exec(line);
  if (c) {
    const start = BigInt(c[9]!);
    const end = c[10] === 'EOF' ? 'EOF' as const : BigInt(c[10]!);
    if (start <= INT64_MAX && (end === 'EOF' || (end <= INT64_MAX && end >= start))) {
      return {
        id: parseInt(c[1]!, 10), kind: c[2] as ProcLockKind, mode: c[3] as ProcLockMode, type: c[4] as ProcLockType,
        pid: parseInt(c[5]!, 10), file: { major: parseInt(c[6]!, 16), minor: parseInt(c[7]!, 16), ino: BigInt(c[8]!) }, start, end, blocked: false,
      };
    }
  }
  const fail = (why: string): never => { throw new ProcParseError(source, lineNo, line, why); };
  const tokens = line.trim().split(/\s+/);
  let i = 0;
  const idTok = tokens[i++] ?? '';
  if (!/^\d+:$/.test(idTok)) fail('expected "<id>:" at the start of a lock line');
  let blocked = false;
  while (tokens[i] === '->') { blocked = true; i++; }
  const kind = tokens[i++] ?? '';
  if (!KINDS.has(kind)) fail(`unknown lock kind "${kind}"`);
  const mode = tokens[i++] ?? '';
  if (!MODES.has(mode)) fail(`unknown lock mode "${mode}"`);
  const type = tokens[i++] ?? '';
  if (!TYPES.has(type)) fail(`unknown lock type "${type}"`);
  const pidTok = tokens[i++] ?? '';
  if (!INT_RE.test(pidTok)) fail(`bad pid "${pidTok}"`);
  const devTok = tokens[i++] ?? '';
  let file: DevIno | null = null;
  if (devTok !== '<none>') {
    const m = DEVINO_RE.exec(devTok);
    if (!m) fail(`bad maj:min:ino "${devTok}"`);
    file = { major: parseInt(m![1]!, 16), minor: parseInt(m![2]!, 16), ino: BigInt(m![3]!) };
  }
  const startTok = tokens[i++] ?? '';
  if (!UINT_RE.test(startTok)) fail(`bad start offset "${startTok}"`);
  const start = BigInt(startTok);
  const endTok = tokens[i++] ?? '';
  let end: bigint | 'EOF';
  if (endTok === 'EOF') end = 'EOF';
  else if (UINT_RE.test(endTok)) end = BigInt(endTok);
  else return fail(`bad end offset "${endTok}"`);
  if (i !== tokens.length) fail('unexpected trailing fields');
  if (start > INT64_MAX || (end !== 'EOF' && (end > INT64_MAX || end < start))) fail('offset out of range');
  return {
    id: parseInt(idTok, 10), kind: kind as ProcLockKind, mode: mode as ProcLockMode, type: type as ProcLockType,
    pid: parseInt(pidTok, 10), file, start, end, blocked,
  };
}
