/**
 * Who holds a lock we are waiting for: read from /proc/locks, with OFD holders (shown as
 * pid -1 there) found by scanning /proc/<pid>/fdinfo lock lines. Used only after a wait
 * has timed out, so the cost of the scan does not matter.
 *
 * /proc/locks sample (fields: id, kind, mode, type, pid, maj:min:ino, start, end):
 *     1: POSIX  ADVISORY  WRITE 2163 fe:00:2146453 0 EOF
 *     3: OFDLCK ADVISORY  READ -1 fe:00:2146451 50 EOF
 *     4: FLOCK  ADVISORY  WRITE 2163 fe:00:2146452 0 EOF
 *     4: -> FLOCK  ADVISORY  WRITE 2170 fe:00:2146452 0 EOF      (a blocked waiter, skipped)
 */
import fs from 'node:fs';

export interface LockHolder {
  /** null when the holder could not be identified (OFD lock whose fd we could not find) */
  readonly pid: number | null;
  readonly comm: string | null;
  readonly kind: string;
  readonly type: string;
  readonly start: bigint;
  readonly end: bigint | 'EOF';
  /** for OFD/flock holders found through fdinfo: the holder's fd */
  readonly fd?: number;
}

interface Line { kind: string; type: string; pid: number; ino: bigint; start: bigint; end: bigint | 'EOF' }

const LINE = /^\s*(?:\d+:\s+)?(\S+)\s+\S+\s+(\S+)\s+(-?\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s+(\d+)\s+(\d+|EOF)\s*$/;

function parseLine(text: string): Line | null {
  if (text.includes('->')) return null;
  const m = LINE.exec(text.replace(/^lock:\s*/, ''));
  if (!m) return null;
  return { kind: m[1]!, type: m[2]!, pid: Number(m[3]), ino: BigInt(m[4]!), start: BigInt(m[5]!), end: m[6] === 'EOF' ? 'EOF' : BigInt(m[6]!) };
}

function overlaps(a: { start: bigint; end: bigint | 'EOF' }, b: { start: bigint; end: bigint | 'EOF' }): boolean {
  const aEnd = a.end === 'EOF' ? (1n << 64n) : a.end;
  const bEnd = b.end === 'EOF' ? (1n << 64n) : b.end;
  return a.start <= bEnd && b.start <= aEnd;
}

function comm(pid: number): string | null {
  try { return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch { return null; }
}

/**
 * Locks on inode `ino` that conflict with the lock we want (`type`, range), excluding the
 * ones we hold ourselves (`selfPid` for POSIX/FLOCK, our own fds for OFD).
 */
export function findHolders(ino: bigint, want: { kind: string; type: 'READ' | 'WRITE'; start: bigint; end: bigint | 'EOF' }, selfPid = process.pid): LockHolder[] {
  let text: string;
  try { text = fs.readFileSync('/proc/locks', 'utf8'); } catch { return []; }
  const out: LockHolder[] = [];
  const wantFamily = want.kind === 'FLOCK' ? 'FLOCK' : 'FCNTL';
  for (const raw of text.split('\n')) {
    const l = parseLine(raw);
    if (!l || l.ino !== ino) continue;
    const family = l.kind === 'FLOCK' ? 'FLOCK' : (l.kind === 'POSIX' || l.kind === 'OFDLCK') ? 'FCNTL' : l.kind;
    if (family !== wantFamily) continue;
    if (want.type === 'READ' && l.type === 'READ') continue;
    if (wantFamily === 'FCNTL' && !overlaps(l, want)) continue;
    if (l.pid === selfPid && l.kind !== 'OFDLCK') continue;
    if (l.pid > 0) { out.push({ pid: l.pid, comm: comm(l.pid), kind: l.kind, type: l.type, start: l.start, end: l.end }); continue; }
    const found = findOfdHolder(l, selfPid);
    out.push(found ?? { pid: null, comm: null, kind: l.kind, type: l.type, start: l.start, end: l.end });
  }
  return out;
}

/** Scan every process's fdinfo for the lock line (OFD owners show pid -1 in /proc/locks). */
function findOfdHolder(l: Line, selfPid: number): LockHolder | null {
  let pids: string[];
  try { pids = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)); } catch { return null; }
  for (const p of pids) {
    if (Number(p) === selfPid) continue;
    let fds: string[];
    try { fds = fs.readdirSync(`/proc/${p}/fdinfo`); } catch { continue; }
    for (const fd of fds) {
      let info: string;
      try { info = fs.readFileSync(`/proc/${p}/fdinfo/${fd}`, 'utf8'); } catch { continue; }
      if (!info.includes('OFDLCK')) continue;
      for (const line of info.split('\n')) {
        if (!line.startsWith('lock:')) continue;
        const x = parseLine(line);
        if (x && x.kind === 'OFDLCK' && x.ino === l.ino && x.type === l.type && x.start === l.start && x.end === l.end) {
          return { pid: Number(p), comm: comm(Number(p)), kind: l.kind, type: l.type, start: l.start, end: l.end, fd: Number(fd) };
        }
      }
    }
  }
  return null;
}

export function describeHolders(holders: readonly LockHolder[]): string {
  if (holders.length === 0) return 'holder unknown (not visible in /proc/locks)';
  return holders.map((h) => {
    const who = h.pid === null ? 'an unidentified process (OFD lock, pid -1)' : `pid ${h.pid} (${h.comm ?? '?'})`;
    return `${who} holds a ${h.kind} ${h.type} lock ${h.start}-${h.end}${h.fd !== undefined ? ` on its fd ${h.fd}` : ''}`;
  }).join('; ');
}

/** Lock lines of one of our own fds, for verifying descriptions received from the vault. */
export function fdLockLines(fd: number, pid: number | 'self' = 'self'): Line[] | null {
  let info: string;
  try { info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'); } catch { return null; }
  const out: Line[] = [];
  for (const line of info.split('\n')) {
    if (!line.startsWith('lock:')) continue;
    const x = parseLine(line);
    if (x) out.push(x);
  }
  return out;
}
