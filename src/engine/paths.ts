/**
 * Path policy for restore: which recorded paths the shim may reopen, and how.
 *
 * A checkpoint image is input from elsewhere (another pod, another node, a volume someone
 * else can write). Every recorded path therefore goes through three gates, all of them
 * BEFORE any user file is opened, so a refusal touches nothing:
 *
 *  1. lexical (`checkRecordedPath`, pure): absolute, no NUL byte, no `..` or `.`
 *     component, not under the kernel pseudo file systems (/proc, /sys), and inside one of
 *     the allowed prefixes (component-wise: `/data` allows `/data/x`, not `/database`).
 *  2. resolution under `root` (`resolveUnderRoot`): every component is lstat'ed below
 *     `root` and symlinks are expanded the way the kernel's RESOLVE_IN_ROOT does (absolute
 *     targets start again at `root`), except that a `..` that would climb above `root`
 *     is refused rather than clamped. The fully resolved path must still be inside an
 *     allowed prefix, must exist, and must be a regular file or a directory (opening a
 *     FIFO blocks, opening a device can have side effects).
 *  3. opening (`openResolved` in restore-sys.ts): the symlink-free resolved path is opened
 *     relative to a directory fd of `root` with openat2(RESOLVE_BENEATH |
 *     RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), so a symlink swapped in after step 2
 *     makes the open fail (ELOOP/EXDEV) instead of escaping. Kernels without openat2
 *     (< 5.6) get a component walk with O_PATH|O_NOFOLLOW.
 */
import fs from 'node:fs';
import path from 'node:path';

export type RefusalRule =
  | 'nul-byte'
  | 'relative'
  | 'dot-component'
  | 'pseudo-fs'
  | 'outside-allowed'
  | 'symlink-escape'
  | 'symlink-loop'
  | 'not-a-directory'
  | 'file-type'
  | 'missing'
  | 'unreadable';

const RULE_TEXT: Readonly<Record<RefusalRule, string>> = {
  'nul-byte': 'contains a NUL byte',
  relative: 'is not an absolute path',
  'dot-component': 'contains a "." or ".." component',
  'pseudo-fs': 'is under /proc or /sys (kernel pseudo file systems are never reopened)',
  'outside-allowed': 'is outside the allowed prefixes',
  'symlink-escape': 'goes through a symlink that climbs above the restore root',
  'symlink-loop': 'goes through too many symlinks',
  'not-a-directory': 'has a component that is not a directory',
  'file-type': 'is not a regular file or directory',
  missing: 'does not exist under the restore root',
  unreadable: 'cannot be inspected',
};

/** A recorded path the restore will not touch. Nothing has been opened when this is thrown. */
export class RestoreRefused extends Error {
  readonly path: string;
  readonly rule: RefusalRule;
  readonly detail: string;
  constructor(recordedPath: string, rule: RefusalRule, detail = '') {
    super(`restore refused: ${JSON.stringify(recordedPath)} ${RULE_TEXT[rule]}${detail ? ` (${detail})` : ''}`);
    this.name = 'RestoreRefused';
    this.path = recordedPath;
    this.rule = rule;
    this.detail = detail;
  }
}

/** Kernel pseudo file systems: a file there is never a lock target worth reopening. */
const PSEUDO_PREFIXES = ['/proc', '/sys'] as const;
const DOT_COMPONENT = /(^|\/)\.\.?(\/|$)/;

/** `p` equals `prefix` or lies below it, compared component by component. */
export function isUnder(p: string, prefix: string): boolean {
  if (prefix === '/') return true;
  const pre = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  return p === pre || p.startsWith(`${pre}/`);
}

/** Normalise an allowed prefix given on the command line; it obeys the same lexical rules. */
export function normalizeAllowPrefix(prefix: string): string {
  if (prefix.includes('\0')) throw new RestoreRefused(prefix, 'nul-byte', 'in --allow prefix');
  if (!prefix.startsWith('/')) throw new RestoreRefused(prefix, 'relative', 'in --allow prefix');
  const parts = prefix.split('/').filter((c) => c !== '');
  if (parts.some((c) => c === '.' || c === '..')) throw new RestoreRefused(prefix, 'dot-component', 'in --allow prefix');
  return `/${parts.join('/')}`;
}

/**
 * Gate 1, pure: returns the path with repeated slashes collapsed, or throws RestoreRefused.
 */
export function checkRecordedPath(p: string, allow: readonly string[]): string {
  if (p.includes('\0')) throw new RestoreRefused(p, 'nul-byte');
  if (!p.startsWith('/')) throw new RestoreRefused(p, 'relative');
  if (DOT_COMPONENT.test(p)) throw new RestoreRefused(p, 'dot-component');
  const norm = p.includes('//') || (p.length > 1 && p.endsWith('/')) ? `/${p.split('/').filter((c) => c !== '').join('/')}` : p;
  if (PSEUDO_PREFIXES.some((pre) => isUnder(norm, pre))) throw new RestoreRefused(p, 'pseudo-fs');
  if (!allow.some((pre) => isUnder(norm, pre))) {
    throw new RestoreRefused(p, 'outside-allowed', `allowed: ${allow.join(', ') || '(none)'}`);
  }
  return norm;
}

/** What lstat says about one path (no symlink followed). */
export type EntryKind = 'file' | 'dir' | 'link' | 'other' | 'missing' | 'notdir';

/** The file system calls resolution needs; injectable so the rules are unit-tested without root. */
export interface ResolveFs {
  /** lstat's file type, or 'missing' (ENOENT) / 'notdir' (ENOTDIR); other errors throw */
  kind(p: string): EntryKind;
  readlink(p: string): string;
}

export const realFs: ResolveFs = {
  kind: (p) => {
    let st: fs.Stats | undefined;
    try {
      st = fs.lstatSync(p, { throwIfNoEntry: false });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return 'notdir';
      throw err;
    }
    if (st === undefined) return 'missing';
    return st.isSymbolicLink() ? 'link' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
  },
  readlink: (p) => fs.readlinkSync(p),
};

export interface ResolvedPath {
  /** the recorded path as found in the image */
  readonly recorded: string;
  /** symlink-free absolute path inside the root (as the restored program sees it) */
  readonly resolved: string;
  readonly isDirectory: boolean;
}

const MAX_SYMLINKS = 40; // the kernel's limit (MAXSYMLINKS)

function hostPath(root: string, inRoot: string): string {
  return root === '/' ? inRoot : path.join(root, inRoot);
}

function kindOf(fsi: ResolveFs, root: string, recorded: string, cur: string): EntryKind {
  let k: EntryKind;
  try {
    k = fsi.kind(hostPath(root, cur));
  } catch (err) {
    throw new RestoreRefused(recorded, 'unreadable', `${cur}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  if (k === 'missing') throw new RestoreRefused(recorded, 'missing', `${cur} not found below root ${root}`);
  if (k === 'notdir') throw new RestoreRefused(recorded, 'not-a-directory', cur);
  return k;
}

function finish(recorded: string, norm: string, resolved: string, k: EntryKind, cur: string, allow: readonly string[]): ResolvedPath {
  if (k !== 'file' && k !== 'dir') throw new RestoreRefused(recorded, 'file-type', cur);
  if (resolved !== norm) {
    if (PSEUDO_PREFIXES.some((pre) => isUnder(resolved, pre))) throw new RestoreRefused(recorded, 'pseudo-fs', `resolves to ${resolved}`);
    if (!allow.some((pre) => isUnder(resolved, pre))) {
      throw new RestoreRefused(recorded, 'outside-allowed', `resolves to ${resolved}; allowed: ${allow.join(', ')}`);
    }
  }
  return { recorded, resolved, isDirectory: k === 'dir' };
}

/**
 * Gate 2: resolve a lexically checked path below `root`, expanding symlinks in-root.
 * Uses lstat/readlink only (no open), so nothing is touched. `cache` remembers directories
 * already seen to be real (non-symlink) directories, so a restore of thousands of files in
 * one directory costs one lstat per file.
 */
export function resolveUnderRoot(
  root: string, recorded: string, allow: readonly string[], fsi: ResolveFs = realFs,
  cache?: Set<string>,
): ResolvedPath {
  const norm = checkRecordedPath(recorded, allow);
  if (norm === '/') return { recorded, resolved: '/', isDirectory: true };
  // Fast path: walk the directory prefixes of `norm` as long as they are real directories.
  let i = 0;
  for (;;) {
    const slash = norm.indexOf('/', i + 1);
    if (slash < 0) break;
    const dir = norm.slice(0, slash);
    if (!cache?.has(dir)) {
      const k = kindOf(fsi, root, recorded, dir);
      if (k === 'link') return resolveSlow(root, recorded, norm, allow, fsi);
      if (k !== 'dir') throw new RestoreRefused(recorded, 'not-a-directory', dir);
      cache?.add(dir);
    }
    i = slash;
  }
  const k = kindOf(fsi, root, recorded, norm);
  if (k === 'link') return resolveSlow(root, recorded, norm, allow, fsi);
  return finish(recorded, norm, norm, k, norm, allow);
}

/** The general walk, once a symlink was met: components are expanded one by one. */
function resolveSlow(root: string, recorded: string, norm: string, allow: readonly string[], fsi: ResolveFs): ResolvedPath {
  let pending = norm.split('/').filter((c) => c !== '');
  const done: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const comp = pending.shift()!;
    if (comp === '.') continue;
    if (comp === '..') {
      // only reachable through a symlink target (the recorded path was checked above)
      if (done.length === 0) throw new RestoreRefused(recorded, 'symlink-escape');
      done.pop();
      continue;
    }
    const cur = `/${[...done, comp].join('/')}`;
    const k = kindOf(fsi, root, recorded, cur);
    if (k === 'link') {
      if (++links > MAX_SYMLINKS) throw new RestoreRefused(recorded, 'symlink-loop');
      const target = fsi.readlink(hostPath(root, cur));
      if (target.includes('\0')) throw new RestoreRefused(recorded, 'nul-byte', `symlink ${cur}`);
      if (target.startsWith('/')) done.length = 0; // absolute target: start again at root
      pending = [...target.split('/').filter((c) => c !== ''), ...pending];
      continue;
    }
    if (pending.length > 0) {
      if (k !== 'dir') throw new RestoreRefused(recorded, 'not-a-directory', cur);
      done.push(comp);
      continue;
    }
    done.push(comp);
    return finish(recorded, norm, `/${done.join('/')}`, k, cur, allow);
  }
  // every component was consumed by `..`: the path resolved to the root itself
  return finish(recorded, norm, '/', 'dir', '/', allow);
}

/** Validate every path of a restore up front; the first refusal throws. */
export function resolveAll(root: string, paths: readonly string[], allow: readonly string[], fsi: ResolveFs = realFs): Map<string, ResolvedPath> {
  const out = new Map<string, ResolvedPath>();
  const cache = new Set<string>();
  for (const p of paths) if (!out.has(p)) out.set(p, resolveUnderRoot(root, p, allow, fsi, cache));
  return out;
}
