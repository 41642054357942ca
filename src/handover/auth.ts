/**
 * Who may receive a checkpoint's descriptors.
 *
 * The vault learns the peer from the socket (SO_PEERCRED: pid/uid/gid as of connect(),
 * translated into the vault's pid namespace), pins the process with a pidfd
 * (SO_PEERPIDFD on Linux 6.5+, else pidfd_open), reads /proc/<pid>/cgroup, and then checks
 * that the pidfd still names a live process with that pid — so a peer that exits and
 * whose pid is reused between the two steps is refused rather than confused with the
 * newcomer. The decision itself is a pure function of (peer identity, matcher).
 *
 * /proc/<pid>/cgroup paths are relative to the *vault's* cgroup namespace. A vault in a
 * private cgroup namespace sees other pods as `/../../kubepods-…`; the pod-UID matcher
 * looks for the pod segment anywhere in the path, so it works either way, while the
 * cgroup-path matcher (local mode) expects the vault in the root cgroup namespace.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseProcCgroup, parseKubeletCgroupPath, normalizePodUID, findCgroupMounts, type CgroupLine } from '../proc/cgroup.js';
import { peerCred, peerPidfd } from '../sys/socket.js';
import { pidfdOpen, closeQuiet } from '../sys/libc.js';

export interface PeerIdentity {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  readonly cgroups: readonly CgroupLine[];
}

/**
 * `notReady`: the matcher cannot decide yet (e.g. the restore pod's UID is not known): the
 * peer is told "not-ready" and may retry, instead of being refused for good.
 */
export type MatchResult = { readonly ok: true } | { readonly ok: false; readonly reason: string; readonly notReady?: boolean };

/** Decides whether a peer is the restore target. Implementations are pure. */
export interface TargetMatcher {
  /** for logs and refusals: "cgroup /lockmig/target", "pid 1234", "pod 0f8a…" */
  describe(): string;
  match(peer: PeerIdentity): MatchResult;
}

function unifiedPath(peer: PeerIdentity): string | undefined {
  return peer.cgroups.find((l) => l.unified)?.path;
}

/**
 * Local mode: the peer's cgroup2 path must be `cgroupPath` or lie below it. The path may be
 * given relative to the cgroup2 root (`/lockmig/target`) or as a filesystem path under the
 * cgroup2 mount (`/sys/fs/cgroup/unified/lockmig/target`); both name the same cgroup.
 */
export class CgroupPathMatcher implements TargetMatcher {
  readonly cgroupPath: string;
  constructor(cgroupPath: string, cgroup2Mount: string | undefined = findCgroupMounts().cgroup2) {
    this.cgroupPath = CgroupPathMatcher.normalize(cgroupPath, cgroup2Mount);
  }
  static normalize(p: string, mount: string | undefined): string {
    let rel = path.posix.normalize(p);
    if (mount && (rel === mount || rel.startsWith(`${mount}/`))) rel = rel.slice(mount.length) || '/';
    if (!rel.startsWith('/')) throw new Error(`cgroup path must be absolute: ${p}`);
    return rel.length > 1 ? rel.replace(/\/+$/, '') : rel;
  }
  describe(): string {
    return `cgroup ${this.cgroupPath}`;
  }
  match(peer: PeerIdentity): MatchResult {
    const p = unifiedPath(peer);
    if (p === undefined) return { ok: false, reason: 'peer has no cgroup2 membership' };
    if (p.split('/').includes('..')) return { ok: false, reason: `peer cgroup ${p} is outside the vault's cgroup namespace` };
    const want = this.cgroupPath;
    if (p === want || want === '/' || p.startsWith(`${want}/`)) return { ok: true };
    return { ok: false, reason: `peer cgroup ${p} is not inside ${want}` };
  }
}

/** Local mode: exactly this pid (as the vault's pid namespace sees it). */
export class PidMatcher implements TargetMatcher {
  constructor(readonly pid: number) {
    if (!Number.isSafeInteger(pid) || pid <= 0) throw new Error(`invalid target pid ${pid}`);
  }
  describe(): string {
    return `pid ${this.pid}`;
  }
  match(peer: PeerIdentity): MatchResult {
    return peer.pid === this.pid ? { ok: true } : { ok: false, reason: `peer pid ${peer.pid} is not ${this.pid}` };
  }
}

/**
 * Cluster mode: the peer must sit in a cgroup the kubelet made for this pod UID, in either
 * layout: cgroupfs `kubepods/burstable/pod<uid>/<cid>` or systemd
 * `kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`
 * (Guaranteed pods have no QoS level). Every hierarchy line that names a pod must name
 * this one; at least one must.
 */
export class PodUidMatcher implements TargetMatcher {
  readonly podUID: string;
  constructor(podUID: string) {
    const u = normalizePodUID(podUID);
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(u)) throw new Error(`invalid pod UID ${podUID}`);
    this.podUID = u;
  }
  describe(): string {
    return `pod ${this.podUID}`;
  }
  match(peer: PeerIdentity): MatchResult {
    let seen = false;
    for (const line of peer.cgroups) {
      const k = parseKubeletCgroupPath(line.path);
      if (!k) continue;
      if (k.podUID !== this.podUID) return { ok: false, reason: `peer belongs to pod ${k.podUID}, not ${this.podUID}` };
      seen = true;
    }
    return seen ? { ok: true } : { ok: false, reason: `peer is not in any pod cgroup (want pod ${this.podUID})` };
  }
}

/** A target that no peer can match: a vault entry that only waits for its release timeout. */
export class NobodyMatcher implements TargetMatcher {
  describe(): string {
    return 'nobody';
  }
  match(): MatchResult {
    return { ok: false, reason: 'this checkpoint accepts no receiver' };
  }
}

export class PeerIdentityError extends Error {
  constructor(message: string, readonly pid: number, readonly uid: number) {
    super(message);
    this.name = 'PeerIdentityError';
  }
}

/** The pid a pidfd refers to, from /proc/self/fdinfo/<pidfd> "Pid:" (-1 once it has exited). */
function pidOfPidfd(pidfd: number): number | undefined {
  const m = /^Pid:\s*(-?\d+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${pidfd}`, 'utf8'));
  return m ? Number(m[1]) : undefined;
}

/**
 * Identify the process at the other end of a connected unix socket, race-free against pid
 * reuse. Throws PeerIdentityError when the peer vanished or cannot be identified.
 */
export function identifyPeer(sock: number, procRoot = '/proc'): PeerIdentity {
  const cred = peerCred(sock);
  if (cred.pid <= 0) throw new PeerIdentityError('peer pid is not visible from the vault (another pid namespace?)', cred.pid, cred.uid);
  let pidfd: number | null = null;
  try {
    pidfd = peerPidfd(sock);
  } catch {
    pidfd = null; // ESRCH: the peer is already gone; handled below
  }
  if (pidfd === null) {
    try {
      pidfd = pidfdOpen(cred.pid);
    } catch {
      throw new PeerIdentityError(`peer pid ${cred.pid} is gone`, cred.pid, cred.uid);
    }
  }
  try {
    const before = pidOfPidfd(pidfd);
    if (before !== cred.pid) throw new PeerIdentityError(`peer pid ${cred.pid} is gone (pidfd says ${before})`, cred.pid, cred.uid);
    let text: string;
    try {
      text = fs.readFileSync(`${procRoot}/${cred.pid}/cgroup`, 'utf8');
    } catch (err) {
      throw new PeerIdentityError(`cannot read cgroup of peer pid ${cred.pid}: ${(err as Error).message}`, cred.pid, cred.uid);
    }
    // Still the same, live process? Then the cgroup we read is the peer's, not a pid reuser's.
    const after = pidOfPidfd(pidfd);
    if (after !== cred.pid) throw new PeerIdentityError(`peer pid ${cred.pid} exited while being identified`, cred.pid, cred.uid);
    return { ...cred, cgroups: parseProcCgroup(text, `${procRoot}/${cred.pid}/cgroup`) };
  } finally {
    closeQuiet(pidfd);
  }
}
