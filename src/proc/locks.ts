/**
 * /proc/locks: every lock on the system, one per line, blocked waiters marked `->`.
 *
 *   1: POSIX  ADVISORY  WRITE 2163 fe:00:2146453 0 EOF
 *   1: -> POSIX  ADVISORY  WRITE 2190 fe:00:2146453 0 EOF
 *   3: OFDLCK ADVISORY  READ -1 fe:00:2146451 50 EOF
 */
import { readFileSync } from 'node:fs';
import { parseLockLine, type ProcLock } from './lockline.js';

/** Held locks only: `->` waiters are not locks and are dropped (counted in `waiters`). */
export interface ProcLocksTable {
  readonly locks: readonly ProcLock[];
  readonly waiters: number;
}

export function parseProcLocks(text: string, source = '/proc/locks'): ProcLocksTable {
  const locks: ProcLock[] = [];
  let waiters = 0;
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!;
    if (line.trim() === '') continue;
    const l = parseLockLine(line, source, n + 1);
    if (l.blocked) waiters++;
    else locks.push(l);
  }
  return { locks, waiters };
}

export function readProcLocks(path = '/proc/locks'): ProcLocksTable {
  return parseProcLocks(readFileSync(path, 'utf8'), path);
}
