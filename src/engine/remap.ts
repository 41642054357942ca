/**
 * Finding a path for an open file whose own path leads nowhere from the process's root.
 *
 * An open file description remembers the mount it was opened on. A description that came from
 * another mount namespace — received over SCM_RIGHTS, taken with pidfd_getfd, or handed over by
 * lockmig's vault from a source pod to its replacement — still points at the source's mount,
 * and once the source's mount namespace is gone that mount is detached: `readlink
 * /proc/<pid>/fd/<n>` then shows the path below the detached mount's root (`/app.db`), and its
 * fdinfo `mnt_id` names a mount that is in no process's mountinfo. The file itself is usually
 * reachable in the holder's own namespace, through its own mount of the same volume
 * (`/data/app.db`).
 *
 * This module finds that path: every suffix of the shown path, below every mount point of the
 * process, is a candidate; a candidate is accepted only when stat() through /proc/<pid>/root
 * gives the very same device and inode as the open fd (so no other file can be taken for it).
 * Deeper mount points and longer suffixes are tried first.
 */
import type { MountInfo } from '../proc/index.js';
import { statxPath } from '../sys/index.js';

/** At most this many stat() calls per fd: a container has tens of mounts and paths are short. */
export const MAX_REMAP_CANDIDATES = 4096;

export interface Remapped {
  /** the path as the process sees it (absolute, below the process's root) */
  readonly path: string;
  /** the process's mount the path goes through */
  readonly mount: MountInfo;
}

/** The identity a candidate must share with the open fd: device (major:minor) and inode. */
export interface FileIdentity {
  readonly ino: bigint;
  readonly major: number;
  readonly minor: number;
}

/** `/a/b/c` → [`/a/b/c`, `/b/c`, `/c`] */
export function pathSuffixes(shown: string): string[] {
  const segs = shown.split('/').filter((s) => s !== '');
  const out: string[] = [];
  for (let i = 0; i < segs.length; i++) out.push(`/${segs.slice(i).join('/')}`);
  return out;
}

function join(mountPoint: string, suffix: string): string {
  return mountPoint === '/' ? suffix : `${mountPoint}${suffix}`;
}

/**
 * The path under which `pid` reaches the file open as `fdStat`, or undefined. `shown` is the
 * fd's link text (without " (deleted)"), `mounts` the process's mountinfo.
 */
export function findPathInNamespace(
  pid: number, shown: string, fdStat: FileIdentity, mounts: ReadonlyMap<number, MountInfo>,
  stat: (p: string) => FileIdentity | null = statxPath, procRoot = '/proc',
): Remapped | undefined {
  if (!shown.startsWith('/')) return undefined;
  const ordered = [...mounts.values()].sort((a, b) => b.mountPoint.length - a.mountPoint.length || a.mntId - b.mntId);
  let tries = 0;
  for (const suffix of pathSuffixes(shown)) {
    for (const m of ordered) {
      if (++tries > MAX_REMAP_CANDIDATES) return undefined;
      const candidate = join(m.mountPoint, suffix);
      const st = stat(`${procRoot}/${pid}/root${candidate}`);
      if (!st || st.ino !== fdStat.ino || st.major !== fdStat.major || st.minor !== fdStat.minor) continue;
      // the deepest mount point containing the candidate is the mount it really goes through
      const via = ordered.find((x) => x.mountPoint === '/' || candidate === x.mountPoint || candidate.startsWith(`${x.mountPoint}/`)) ?? m;
      return { path: candidate, mount: via };
    }
  }
  return undefined;
}
