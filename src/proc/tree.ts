/**
 * Process trees. Children come from /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN,
 * "2170 2171 "); when that file is missing the whole of /proc/<n>/stat is scanned for ppids.
 * Only thread-group leaders are returned (children lists hold tgids).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { parseStatPpid } from './status.js';

function readOrNull(p: string): string | null {
  try { return readFileSync(p, 'utf8'); } catch { return null; }
}

function childrenViaTask(pid: number): number[] | null {
  let tids: string[];
  try { tids = readdirSync(`/proc/${pid}/task`); } catch { return []; }
  const out: number[] = [];
  for (const tid of tids) {
    const p = `/proc/${pid}/task/${tid}/children`;
    const t = readOrNull(p);
    if (t === null) {
      if (!existsSync(p) && existsSync(`/proc/${pid}/task/${tid}`)) return null; // no CONFIG_PROC_CHILDREN
      continue;
    }
    for (const s of t.split(/\s+/)) if (s !== '') out.push(parseInt(s, 10));
  }
  return out;
}

/** pid → ppid for every process on the system (the fallback scan). */
export function scanParents(): Map<number, number> {
  const m = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const p = `/proc/${e}/stat`;
    const t = readOrNull(p);
    if (t === null) continue; // exited meanwhile
    m.set(parseInt(e, 10), parseStatPpid(t, p));
  }
  return m;
}

/** All descendants of `root` (not including it), parents before children. `scan` forces the scan of every /proc/<n>/stat. */
export function descendants(root: number, opts: { scan?: boolean } = {}): number[] {
  const out: number[] = [];
  const seen = new Set<number>([root]);
  let parents: Map<number, number> | null = null;
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    let kids = opts.scan ? null : childrenViaTask(pid);
    if (kids === null) {
      parents ??= scanParents();
      kids = [...parents].filter(([, pp]) => pp === pid).map(([p]) => p).sort((a, b) => a - b);
    }
    for (const k of kids) {
      if (seen.has(k)) continue;
      seen.add(k);
      out.push(k);
      queue.push(k);
    }
  }
  return out;
}
