/**
 * The fallback lock source for kernels whose fdinfo shows no `lock:` lines: /proc/locks,
 * matched to the tree's open file descriptions by device and inode.
 *
 * - POSIX: /proc/locks names the owning pid (host pid namespace). Recorded on that
 *   process's lowest fd on the file when the pid is in the tree; ignored otherwise.
 * - OFD (pid -1): the holding description is found with read-only F_OFD_GETLK probes from
 *   a pidfd_getfd duplicate of each candidate description, at a byte that no other lock on
 *   the file covers: there, "no conflict" means "this description holds the lock".
 *   Write locks always have such a byte (they are exclusive). Read locks entirely covered
 *   by other locks go through `eliminate` below; what that cannot decide is reported as a
 *   warning and not recorded (setting a lock to find out is never an option).
 * - FLOCK/LEASE: there is no query call for flock(2). /proc/locks gives the pid of the
 *   process that took the lock; its description on that file is used when the pid is in
 *   the tree and has exactly one; when the taker is outside the tree (it forked and the
 *   tree inherited the description) and the tree has exactly one description on the file,
 *   that one is used (logged as an inference); anything else is a warning.
 */
import type { Log } from '../log/lite.js';
import type { ProcLock, ProcLocksTable } from '../proc/index.js';
import { borrowFd, ofdFirstConflict, ofdRangeConflicts, type BorrowedFd } from './probe.js';
import type { Candidate, FoundLock } from './dump.js';
import { recordable } from './dump.js';

const INT64_MAX = (1n << 63n) - 1n;
const endOf = (l: { end: bigint | 'EOF' }): bigint => (l.end === 'EOF' ? INT64_MAX : l.end);

/** A byte of `l` that none of `others` covers, or null. */
export function uniquePoint(l: { start: bigint; end: bigint | 'EOF' }, others: readonly { start: bigint; end: bigint | 'EOF' }[]): bigint | null {
  const lEnd = endOf(l);
  const points = [l.start, ...others.map((o) => endOf(o) + 1n)].filter((p) => p >= l.start && p <= lEnd);
  points.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const p of points) if (!others.some((o) => o.start <= p && p <= endOf(o))) return p;
  return null;
}

export function attributeProcLocks(
  table: ProcLocksTable, groups: readonly Candidate[][], treePids: ReadonlySet<number>, log: Log,
  warn: (message: string) => void,
): FoundLock[] {
  const byFile = new Map<string, Candidate[][]>();
  for (const g of groups) {
    const c = g[0]!;
    const k = `${c.dev.major}:${c.dev.minor}:${c.ino}`;
    let list = byFile.get(k);
    if (!list) { list = []; byFile.set(k, list); }
    list.push(g);
  }
  const borrowed = new Map<Candidate[], BorrowedFd>();
  const borrow = (g: Candidate[]): BorrowedFd => {
    let b = borrowed.get(g);
    if (!b) { b = borrowFd(g[0]!.pid, g[0]!.fd); borrowed.set(g, b); }
    return b;
  };
  const out: FoundLock[] = [];
  /** OFD locks whose every byte other locks also cover: attributed by elimination afterwards */
  const covered: { l: ProcLock; fk: string; others: ProcLock[]; descs: Candidate[][] }[] = [];
  const owner = new Map<ProcLock, Candidate[]>();
  try {
    for (const l of table.locks) {
      if (!l.file) continue;
      const fk = `${l.file.major}:${l.file.minor}:${l.file.ino}`;
      const descs = byFile.get(fk);
      if (!descs) continue;
      const r = recordable(l);
      if (!('kind' in r)) { warn(`${l.kind} lock on ${descs[0]![0]!.path} not recorded: ${r.skip}`); continue; }
      const base = { kind: r.kind, type: r.type, start: l.start, end: l.end };
      if (r.kind === 'POSIX') {
        if (!treePids.has(l.pid)) continue;
        const mine = descs.flat().filter((c) => c.pid === l.pid).sort((a, b) => a.fd - b.fd)[0];
        if (!mine) { warn(`POSIX ${l.type} lock ${l.start}-${l.end} of pid ${l.pid} on ${descs[0]![0]!.path} not recorded: the owner has no restorable fd on the file`); continue; }
        out.push({ ...base, pid: mine.pid, fd: mine.fd });
      } else if (r.kind === 'OFD') {
        const others = table.locks.filter((o: ProcLock) => o !== l && o.file && (o.kind === 'POSIX' || o.kind === 'OFDLCK')
          && `${o.file.major}:${o.file.minor}:${o.file.ino}` === fk);
        const p = uniquePoint(l, others);
        if (p === null) { covered.push({ l, fk, others, descs }); continue; }
        const holder = descs.find((g) => !ofdRangeConflicts(borrow(g).fd, p, 1n));
        if (holder) { out.push({ ...base, pid: holder[0]!.pid, fd: holder[0]!.fd }); owner.set(l, holder); }
      } else {
        const own = l.pid > 0 && treePids.has(l.pid) ? descs.filter((g) => g.some((c) => c.pid === l.pid)) : [];
        let pick: Candidate[] | undefined;
        if (own.length === 1) pick = own[0];
        else if (own.length === 0 && descs.length === 1) {
          pick = descs[0];
          log.info('flock/lease taker is not in the tree; attributed to the only description the tree has on the file', { pid: l.pid, file: fk });
        }
        if (!pick) {
          warn(`${r.kind} ${l.type} lock of pid ${l.pid} on ${descs[0]![0]!.path} not recorded: /proc/locks does not say which of ${own.length || descs.length} descriptions holds it (use the fdinfo method)`);
          continue;
        }
        out.push({ ...base, pid: pick[0]!.pid, fd: pick[0]!.fd });
      }
    }
    for (const { l, others, descs } of covered) {
      const found = eliminate(l, others, descs, owner, (g, p) => ofdFirstConflict(borrow(g).fd, p, 1n));
      if (found) {
        out.push({ kind: 'OFD', type: l.type as 'READ' | 'WRITE', start: l.start, end: l.end, pid: found[0]!.pid, fd: found[0]!.fd });
        owner.set(l, found);
        log.info('OFD lock attributed by elimination', { pid: found[0]!.pid, fd: found[0]!.fd, start: l.start.toString(), end: String(l.end) });
      } else {
        warn(`OFD ${l.type} lock ${l.start}-${l.end} on ${descs[0]![0]!.path} not recorded: other locks cover all of it, so its description cannot be found without setting a lock (use the fdinfo method)`);
      }
    }
  } finally {
    for (const b of borrowed.values()) b.close();
  }
  return out;
}

const sameRange = (a: { type: string; start: bigint; end: bigint | 'EOF' }, b: { type: string; start: bigint; end: bigint | 'EOF' }) =>
  a.type === b.type && a.start === b.start && a.end === b.end;
const overlaps = (a: { start: bigint; end: bigint | 'EOF' }, b: { start: bigint; end: bigint | 'EOF' }) =>
  a.start <= endOf(b) && b.start <= endOf(a);

/**
 * Attribute an OFD lock that other locks fully overlap, with read-only probes only.
 *
 * The holder never sees its own lock as a conflict, so the description holding `l` is among
 * those whose F_OFD_GETLK at a byte of `l` reports some *other* lock. Descriptions already
 * known to hold a lock overlapping `l` are excluded (one owner's locks never overlap: the
 * kernel merges or splits them). When exactly one candidate is left, it is the holder.
 * Returns null when that is not decidable (identical duplicates, or several candidates).
 */
export function eliminate(
  l: ProcLock, others: readonly ProcLock[], descs: readonly Candidate[][], owner: ReadonlyMap<ProcLock, Candidate[]>,
  probe: (g: Candidate[], p: bigint) => { type: string; start: bigint; end: bigint | 'EOF' } | null,
): Candidate[] | null {
  if (others.some((o) => sameRange(o, l))) return null;
  // the byte of l covered by the fewest other locks
  const lEnd = endOf(l);
  const points = [l.start, ...others.map((o) => endOf(o) + 1n), ...others.map((o) => o.start)].filter((p) => p >= l.start && p <= lEnd);
  let best = l.start;
  let bestN = Infinity;
  for (const p of points) {
    const n = others.filter((o) => o.start <= p && p <= endOf(o)).length;
    if (n < bestN) { bestN = n; best = p; }
  }
  const excluded = new Set<Candidate[]>();
  for (const [lk, g] of owner) if (overlaps(lk, l)) excluded.add(g);
  const cands = descs.filter((g) => {
    if (excluded.has(g)) return false;
    const r = probe(g, best);
    return r !== null && !sameRange(r, l);
  });
  return cands.length === 1 ? cands[0]! : null;
}
