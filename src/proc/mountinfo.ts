/**
 * /proc/<pid>/mountinfo (Documentation/filesystems/proc.rst 3.5):
 *
 *   36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
 *   (1)(2)(3)   (4)   (5)         (6)      (7)     (8) (9)  (10)      (11)
 *
 * mount id, parent id, major:minor of the superblock (same device as /proc/locks shows),
 * root of the mount within its filesystem, mount point (relative to the process's root),
 * options, optional fields, separator, fs type, source, super options. Paths escape
 * space, tab, newline and backslash as \040 \011 \012 \134.
 */
import { readFileSync } from 'node:fs';
import { ProcParseError } from './errors.js';

export interface MountInfo {
  readonly mntId: number;
  readonly parentId: number;
  readonly major: number;
  readonly minor: number;
  readonly root: string;
  readonly mountPoint: string;
  readonly fsType: string;
  readonly source: string;
}

export function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountinfo(text: string, source: string): ReadonlyMap<number, MountInfo> {
  const out = new Map<number, MountInfo>();
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!;
    if (line === '') continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    const dev = /^(\d+):(\d+)$/.exec(f[2] ?? '');
    if (f.length < 10 || sep < 0 || sep + 2 >= f.length || !/^\d+$/.test(f[0]!) || !/^\d+$/.test(f[1]!) || !dev) {
      throw new ProcParseError(source, n + 1, line, 'malformed mountinfo line');
    }
    const rec: MountInfo = {
      mntId: parseInt(f[0]!, 10), parentId: parseInt(f[1]!, 10),
      major: parseInt(dev[1]!, 10), minor: parseInt(dev[2]!, 10),
      root: unescapeMountPath(f[3]!), mountPoint: unescapeMountPath(f[4]!),
      fsType: f[sep + 1]!, source: unescapeMountPath(f[sep + 2]!),
    };
    out.set(rec.mntId, rec);
  }
  return out;
}

export function readMountinfo(pid: number): ReadonlyMap<number, MountInfo> {
  const p = `/proc/${pid}/mountinfo`;
  return parseMountinfo(readFileSync(p, 'utf8'), p);
}

/**
 * Split an absolute path (as the process sees it) into the mount point of `mnt` and the
 * path below it. Returns null when `path` is not under the mount point (e.g. the file was
 * reached through a mount hidden since).
 */
export function splitByMount(path: string, mnt: MountInfo): { mountPoint: string; relPath: string } | null {
  const mp = mnt.mountPoint;
  if (mp === '/') return { mountPoint: '/', relPath: path.replace(/^\/+/, '') };
  if (path === mp) return { mountPoint: mp, relPath: '' };
  if (path.startsWith(`${mp}/`)) return { mountPoint: mp, relPath: path.slice(mp.length + 1) };
  return null;
}
