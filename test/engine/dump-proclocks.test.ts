/**
 * The /proc/locks fallback's attribution rules as pure functions, with a simulated kernel:
 * F_OFD_GETLK from description X reports the first lock (in the inode's list order) that
 * covers the probed byte and is not X's. No root needed.
 */
import { describe, expect, it } from 'vitest';
import { eliminate, uniquePoint } from '../../src/engine/dump-proclocks.js';
import type { Candidate } from '../../src/engine/dump.js';
import type { ProcLock } from '../../src/proc/index.js';

const lock = (start: bigint, end: bigint | 'EOF', type: 'READ' | 'WRITE' = 'READ'): ProcLock => ({
  id: 0, kind: 'OFDLCK', mode: 'ADVISORY', type, pid: -1, file: { major: 254, minor: 0, ino: 7n }, start, end, blocked: false,
});
const desc = (fd: number): Candidate[] => [{
  pid: 100, fd, order: 0, path: '/f', dev: { major: 254, minor: 0 }, ino: 7n,
  info: { pos: 0n, flags: 2, mntId: 1, ino: 7n, locks: [], extra: [] },
}];
const endOf = (e: bigint | 'EOF') => (e === 'EOF' ? 1n << 63n : e);

/** The kernel as far as F_OFD_GETLK shows it: `list` in the inode's order, each with its owner. */
function kernel(list: readonly { l: ProcLock; owner: Candidate[] }[]) {
  return (g: Candidate[], p: bigint) => list.find(({ l, owner }) => owner !== g && l.start <= p && p <= endOf(l.end))?.l ?? null;
}

describe('uniquePoint', () => {
  it('finds a byte only the lock covers, or null', () => {
    expect(uniquePoint(lock(0n, 99n), [lock(0n, 19n), lock(10n, 39n)])).toBe(40n);
    expect(uniquePoint(lock(0n, 19n), [lock(0n, 99n)])).toBeNull();
    expect(uniquePoint(lock(50n, 'EOF'), [lock(0n, 60n)])).toBe(61n);
    expect(uniquePoint(lock(5n, 5n), [])).toBe(5n);
  });
});

describe('eliminate', () => {
  // zdtm file_locks06: four descriptions, read locks [0,19] [10,39] [0,99] [70,269], taken in that order
  const D = [desc(3), desc(4), desc(5), desc(6)];
  const L = [lock(0n, 19n), lock(10n, 39n), lock(0n, 99n), lock(70n, 269n)];
  const list = L.map((l, i) => ({ l, owner: D[i]! }));

  it('attributes fully covered read locks once the covering locks are known', () => {
    const owner = new Map<ProcLock, Candidate[]>([[L[2]!, D[2]!], [L[3]!, D[3]!]]); // found through unique bytes
    const probe = kernel(list);
    const others = (i: number) => L.filter((_, j) => j !== i);
    expect(eliminate(L[0]!, others(0), D, owner, probe)).toBe(D[0]);
    owner.set(L[0]!, D[0]!);
    expect(eliminate(L[1]!, others(1), D, owner, probe)).toBe(D[1]);
  });

  it('gives up (null) rather than guess when the list order hides the holder', () => {
    // the big lock first in the list: every other description reports it, the small lock's holder too
    const reordered = [list[2]!, list[0]!, list[1]!, list[3]!];
    const owner = new Map<ProcLock, Candidate[]>([[L[2]!, D[2]!], [L[3]!, D[3]!]]);
    expect(eliminate(L[0]!, L.filter((_, j) => j !== 0), D, owner, kernel(reordered))).toBeNull();
  });

  it('never attributes a lock that has an identical twin', () => {
    const a = lock(0n, 9n);
    const b = lock(0n, 9n);
    const probe = kernel([{ l: a, owner: D[0]! }, { l: b, owner: D[1]! }]);
    expect(eliminate(a, [b], D.slice(0, 2), new Map(), probe)).toBeNull();
  });
});

describe('groupByDescription', () => {
  /** a fake kcmp over a table fd → description "address" */
  const fake = (addr: Record<string, number>, ordered = true) => (p1: number, f1: number, p2: number, f2: number): 0 | 1 | 2 | 3 => {
    const a = addr[`${p1}/${f1}`]!;
    const b = addr[`${p2}/${f2}`]!;
    if (a === b) return 0;
    if (!ordered) return 3;
    return a < b ? 1 : 2;
  };
  const fds = [{ pid: 1, fd: 3 }, { pid: 1, fd: 4 }, { pid: 2, fd: 3 }, { pid: 2, fd: 9 }, { pid: 1, fd: 7 }];
  const addr = { '1/3': 50, '1/4': 10, '2/3': 50, '2/9': 10, '1/7': 30 };

  it('groups exactly by description, in dump order, with kcmp ordering', async () => {
    const { groupByDescription } = await import('../../src/engine/dump.js');
    const g = groupByDescription(fds, fake(addr));
    expect(g.map((x) => x.map((y) => `${y.pid}/${y.fd}`))).toEqual([['1/3', '2/3'], ['1/4', '2/9'], ['1/7']]);
  });

  it('falls back to pairwise equality when kcmp cannot order', async () => {
    const { groupByDescription } = await import('../../src/engine/dump.js');
    const g = groupByDescription(fds, fake(addr, false));
    expect(g.map((x) => x.map((y) => `${y.pid}/${y.fd}`))).toEqual([['1/3', '2/3'], ['1/4', '2/9'], ['1/7']]);
  });

  it('does not call kcmp for a file opened once', async () => {
    const { groupByDescription } = await import('../../src/engine/dump.js');
    expect(groupByDescription([{ pid: 1, fd: 3 }], () => { throw new Error('kcmp called'); })).toEqual([[{ pid: 1, fd: 3 }]]);
  });
});
