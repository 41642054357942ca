/**
 * A process's fds: /proc/<pid>/fd/<n> symlinks and what their targets mean.
 *
 *   /data/db.sqlite              a path in the process's mount namespace
 *   /data/old.log (deleted)      unlinked while open
 *   socket:[123456]  pipe:[123457]  anon_inode:[eventfd]  /memfd:buf (deleted)
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { nativeLib } from '../sys/native.js';
import { SyscallError } from '../sys/errors.js';

export type FdTargetKind = 'path' | 'deleted' | 'socket' | 'pipe' | 'anon_inode' | 'memfd' | 'other';

export interface FdTarget {
  readonly kind: FdTargetKind;
  /** the raw readlink result */
  readonly target: string;
  /** for 'path' and 'deleted': the path without the " (deleted)" suffix */
  readonly path?: string;
}

const DELETED = ' (deleted)';

/**
 * Classify a readlink result. A name that ends in " (deleted)" is only a guess: a live file
 * may really be named so; callers that can, confirm with the link count (see dump).
 */
export function classifyFdTarget(target: string): FdTarget {
  if (target.startsWith('/memfd:')) return { kind: 'memfd', target };
  if (target.startsWith('socket:[')) return { kind: 'socket', target };
  if (target.startsWith('pipe:[')) return { kind: 'pipe', target };
  if (target.startsWith('anon_inode:')) return { kind: 'anon_inode', target };
  if (!target.startsWith('/')) return { kind: 'other', target };
  if (target.endsWith(DELETED)) return { kind: 'deleted', target, path: target.slice(0, -DELETED.length) };
  return { kind: 'path', target, path: target };
}

/** Open fd numbers of `pid`, ascending. ENOENT/ESRCH (as an errno code) when the process is gone. */
export function listFds(pid: number): number[] {
  const native = nativeLib();
  if (native) {
    try {
      return native.listNumbers(`/proc/${pid}/fd`);
    } catch (err) {
      // the same error shape as readdirSync's, for callers that look at `code`
      if (err instanceof SyscallError) throw Object.assign(new Error(err.message), { code: err.code });
      throw err;
    }
  }
  const out: number[] = [];
  for (const e of readdirSync(`/proc/${pid}/fd`)) out.push(parseInt(e, 10));
  return out.sort((a, b) => a - b);
}

export function readFdLink(pid: number, fd: number): string {
  return readlinkSync(`/proc/${pid}/fd/${fd}`);
}

/**
 * readlink as bytes, decoded; `exact` is false when the name is not valid UTF-8 (Linux
 * names are bytes), so a path built from `text` would name a different file.
 */
export function readFdLinkExact(pid: number, fd: number): { text: string; exact: boolean } {
  const raw = readlinkSync(`/proc/${pid}/fd/${fd}`, { encoding: 'buffer' });
  const text = raw.toString('utf8');
  return { text, exact: Buffer.from(text, 'utf8').equals(raw) };
}
