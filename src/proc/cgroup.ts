/**
 * cgroup membership of processes, and the kubelet's cgroup naming, so that the agent (and
 * the handover vault) can tell which pod and container a host pid belongs to.
 *
 * Kernel layer: no Kubernetes imports. Everything here works from text that the kernel
 * (`/proc/<pid>/cgroup`, `/proc/mounts`) or the kubelet (cgroup directory names) writes.
 *
 * `/proc/<pid>/cgroup`, one line per hierarchy (`hierarchy-ID:controller-list:path`):
 * ```
 * 12:memory:/kubepods/burstable/pod0f8a1c3e-2b4d-4e6f-8a9b-0c1d2e3f4a5b/3f2a…64 hex…
 * 1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f8a1c3e_2b4d_….slice/cri-containerd-3f2a….scope
 * 0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f8a1c3e_2b4d_….slice/cri-containerd-3f2a….scope
 * ```
 * Line `0::` is the unified (v2) hierarchy; v1 lines name their controllers (or `name=systemd`).
 * The path is relative to the reader's cgroup namespace root, so a reader inside a private
 * cgroup namespace sees `/../../kubepods-…`: the parsers below therefore look for the pod
 * segment anywhere in the path instead of anchoring at `/kubepods`.
 */
import fs from 'node:fs';
import path from 'node:path';

/** One line of /proc/<pid>/cgroup. */
export interface CgroupLine {
  readonly hierarchyId: number;
  /** v1 controllers (`memory`, `cpu,cpuacct`, `name=systemd`); empty for the v2 line */
  readonly controllers: readonly string[];
  readonly path: string;
  /** true for the unified hierarchy line (`0::/…`) */
  readonly unified: boolean;
}

export class CgroupParseError extends Error {
  readonly file: string;
  readonly line: number;
  readonly raw: string;
  constructor(file: string, line: number, raw: string, why: string) {
    super(`${file}:${line}: ${why}: ${JSON.stringify(raw)}`);
    this.name = 'CgroupParseError';
    this.file = file;
    this.line = line;
    this.raw = raw;
  }
}

/**
 * Parse the text of /proc/<pid>/cgroup. The path is everything after the second colon
 * (a cgroup name may itself contain colons). Throws CgroupParseError on a malformed line.
 */
export function parseProcCgroup(text: string, file = '/proc/<pid>/cgroup'): readonly CgroupLine[] {
  const out: CgroupLine[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    if (raw === '') continue;
    const c1 = raw.indexOf(':');
    const c2 = c1 < 0 ? -1 : raw.indexOf(':', c1 + 1);
    if (c1 < 0 || c2 < 0) throw new CgroupParseError(file, i + 1, raw, 'expected "id:controllers:path"');
    const idText = raw.slice(0, c1);
    if (!/^\d+$/.test(idText)) throw new CgroupParseError(file, i + 1, raw, 'hierarchy id is not a number');
    const hierarchyId = Number(idText);
    const ctl = raw.slice(c1 + 1, c2);
    const p = raw.slice(c2 + 1);
    if (!p.startsWith('/')) throw new CgroupParseError(file, i + 1, raw, 'cgroup path is not absolute');
    const unified = hierarchyId === 0 && ctl === '';
    out.push({ hierarchyId, controllers: ctl === '' ? [] : ctl.split(','), path: p, unified });
  }
  return out;
}

/** Where the cgroup hierarchies are mounted (from /proc/mounts). */
export interface CgroupMounts {
  /** mount point of the unified (cgroup2) hierarchy, if mounted */
  readonly cgroup2?: string;
  /** v1 mount points by controller (`memory`, `cpu`, `name=systemd`, …) */
  readonly v1: ReadonlyMap<string, string>;
}

/** /proc/mounts escapes space, tab, newline and backslash as octal (\040 …). */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Parse /proc/mounts (or /proc/<pid>/mounts) text into the cgroup mount points:
 * ```
 * cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
 * cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
 * ```
 * The first mount of each hierarchy wins (bind mounts of the same hierarchy may follow).
 */
export function parseCgroupMounts(text: string): CgroupMounts {
  let cgroup2: string | undefined;
  const v1 = new Map<string, string>();
  const V1_OPTS = new Set(['rw', 'ro', 'relatime', 'noatime', 'nosuid', 'nodev', 'noexec', 'clone_children', 'xattr', 'noprefix']);
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 4) continue;
    const mnt = unescapeMountField(f[1]!);
    const type = f[2]!;
    if (type === 'cgroup2') {
      cgroup2 ??= mnt;
    } else if (type === 'cgroup') {
      for (const opt of f[3]!.split(',')) {
        if (V1_OPTS.has(opt) || opt.startsWith('release_agent=') || opt.startsWith('cpuset_v2_mode')) continue;
        if (!v1.has(opt)) v1.set(opt, mnt);
      }
    }
  }
  return cgroup2 === undefined ? { v1 } : { cgroup2, v1 };
}

/** Read the cgroup mount points of this process's mount namespace. */
export function findCgroupMounts(mountsFile = '/proc/self/mounts'): CgroupMounts {
  return parseCgroupMounts(fs.readFileSync(mountsFile, 'utf8'));
}

export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort';
export type CgroupDriver = 'cgroupfs' | 'systemd';
/** The container runtime as it shows in the cgroup name (and the containerID scheme in pod status). */
export type CgroupRuntime = 'containerd' | 'cri-o' | 'docker';

/** What a kubelet-made cgroup path says about its process. */
export interface KubeletCgroup {
  /** pod UID in its API form (dashes, lower case) */
  readonly podUID: string;
  /** undefined when the process sits in the pod cgroup itself, not in a container's */
  readonly containerID?: string;
  /** runtime inferred from the name; undefined for bare cgroupfs ids (containerd or docker) */
  readonly runtime?: CgroupRuntime;
  /** undefined when the path (seen from a private cgroup namespace) does not show it */
  readonly qos?: QosClass;
  readonly driver: CgroupDriver;
}

// systemd escapes '-' in unit names; the kubelet writes pod UIDs with '_' instead.
const SYSTEMD_POD = /^kubepods(?:-(burstable|besteffort))?-pod([0-9a-fA-F_]+)\.slice$/;
const CGROUPFS_POD = /^pod([0-9a-fA-F-]+)$/;
const SYSTEMD_CONTAINER = /^(cri-containerd|docker|crio|cri-o)-([0-9a-fA-F]{12,128})\.scope$/;
const CGROUPFS_CONTAINER = /^(?:(cri-containerd|docker|crio|cri-o)-)?([0-9a-fA-F]{12,128})$/;

function runtimeOf(prefix: string | undefined): CgroupRuntime | undefined {
  switch (prefix) {
    case 'cri-containerd': return 'containerd';
    case 'docker': return 'docker';
    case 'crio': case 'cri-o': return 'cri-o';
    default: return undefined;
  }
}

function qosOf(word: string | undefined): QosClass {
  return word === 'burstable' ? 'Burstable' : word === 'besteffort' ? 'BestEffort' : 'Guaranteed';
}

/** Bring a pod UID to its API form: lower case, dashes (systemd names carry underscores). */
export function normalizePodUID(uid: string): string {
  return uid.toLowerCase().replace(/_/g, '-');
}

/**
 * Parse a cgroup path written by the kubelet (either cgroup driver, v1 or v2) into
 * pod UID, container ID and QoS class. Returns undefined for paths that are not a pod's.
 *
 * cgroupfs driver:  `/kubepods/burstable/pod<uid>/<container-id>` (Guaranteed: `/kubepods/pod<uid>/…`)
 * systemd driver:   `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`
 *                   (`docker-<id>.scope`, `crio-<id>.scope`; Guaranteed: `kubepods-pod<uid_>.slice`)
 * Prefixes before the kubepods part (a `--cgroup-root`, kind's `/kubelet.slice/kubelet-kubepods…`,
 * a private cgroup namespace's `/../..`) and sub-cgroups below the container (systemd inside a
 * container) are allowed. `crio-conmon-<id>.scope` (CRI-O's monitor) is not a container.
 */
export function parseKubeletCgroupPath(cgroupPath: string): KubeletCgroup | undefined {
  const segs = cgroupPath.split('/').filter((s) => s !== '' && s !== '.');
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i]!;
    let podUID: string | undefined;
    let qos: QosClass | undefined;
    let driver: CgroupDriver;
    // kind and some distros prefix the slice names ("kubelet-kubepods-burstable-pod….slice").
    const sd = SYSTEMD_POD.exec(seg.replace(/^[a-z]+-(?=kubepods-)/, ''));
    if (sd) {
      driver = 'systemd';
      podUID = normalizePodUID(sd[2]!);
      qos = qosOf(sd[1]);
    } else {
      const cf = CGROUPFS_POD.exec(seg);
      if (!cf) continue;
      // Only accept `pod<uid>` under a kubepods-style parent, so an unrelated cgroup named
      // "pod…" is not taken for a pod. A private cgroup namespace may hide the parent ("..").
      const parent = segs[i - 1];
      const grand = segs[i - 2];
      if (parent === 'burstable' || parent === 'besteffort') {
        if (grand !== undefined && grand !== '..' && !/kubepods/.test(grand)) continue;
        qos = qosOf(parent);
      } else if (parent !== undefined && /kubepods/.test(parent)) {
        qos = 'Guaranteed';
      } else if (parent !== undefined && parent !== '..') {
        continue;
      }
      driver = 'cgroupfs';
      podUID = normalizePodUID(cf[1]!);
    }
    if (!/^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/.test(podUID)) continue;
    const next = segs[i + 1];
    let containerID: string | undefined;
    let runtime: CgroupRuntime | undefined;
    if (next !== undefined) {
      const m = (driver === 'systemd' ? SYSTEMD_CONTAINER : CGROUPFS_CONTAINER).exec(next)
        ?? (driver === 'systemd' ? CGROUPFS_CONTAINER : SYSTEMD_CONTAINER).exec(next);
      if (m) {
        containerID = m[2]!.toLowerCase();
        runtime = runtimeOf(m[1]);
      }
    }
    return {
      podUID,
      driver,
      ...(qos !== undefined ? { qos } : {}),
      ...(containerID !== undefined ? { containerID } : {}),
      ...(runtime !== undefined ? { runtime } : {}),
    };
  }
  return undefined;
}

/**
 * Build the cgroup path (relative to a hierarchy's mount) that the kubelet and the runtime
 * would create for a container. The inverse of parseKubeletCgroupPath; used to place local
 * processes the way a node would, and to document the layouts.
 */
export function kubeletCgroupPath(o: {
  driver: CgroupDriver; qos: QosClass; podUID: string; containerID?: string; runtime?: CgroupRuntime;
}): string {
  const uid = normalizePodUID(o.podUID);
  const q = o.qos === 'Guaranteed' ? undefined : o.qos.toLowerCase();
  if (o.driver === 'cgroupfs') {
    const parts = ['kubepods', ...(q ? [q] : []), `pod${uid}`];
    if (o.containerID) parts.push(o.containerID);
    return `/${parts.join('/')}`;
  }
  const u = uid.replace(/-/g, '_');
  const parts = ['kubepods.slice'];
  if (q) parts.push(`kubepods-${q}.slice`, `kubepods-${q}-pod${u}.slice`);
  else parts.push(`kubepods-pod${u}.slice`);
  if (o.containerID) {
    const prefix = o.runtime === 'docker' ? 'docker' : o.runtime === 'cri-o' ? 'crio' : 'cri-containerd';
    parts.push(`${prefix}-${o.containerID}.scope`);
  }
  return `/${parts.join('/')}`;
}

/**
 * Which pod/container a process belongs to, from its /proc/<pid>/cgroup lines. The unified
 * line is tried first, then the v1 lines (on hybrid hosts the kubelet's paths may only show
 * in v1 hierarchies: `name=systemd`, `memory`, …). Undefined when no line is a pod's.
 */
export function kubeletCgroupOf(lines: readonly CgroupLine[]): (KubeletCgroup & { readonly path: string }) | undefined {
  const ordered = [...lines.filter((l) => l.unified), ...lines.filter((l) => !l.unified)];
  for (const l of ordered) {
    const k = parseKubeletCgroupPath(l.path);
    if (k) return { ...k, path: l.path };
  }
  return undefined;
}

export interface PodProcess {
  readonly pid: number;
  /** undefined for processes in the pod cgroup but in no container cgroup */
  readonly containerID?: string;
  readonly cgroupPath: string;
}

/** Errors that mean "that process is gone": it may exit at any time during a scan. */
function vanished(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH';
}

/**
 * Scan /proc for the processes of a pod (by UID; either driver, v1 or v2). Returns them in
 * pid order. Processes that exit during the scan are skipped. The sandbox (pause) process is
 * included: it has a container ID of its own, which no container status names.
 */
export function findPodProcesses(podUID: string, opts: { procRoot?: string } = {}): PodProcess[] {
  const procRoot = opts.procRoot ?? '/proc';
  const want = normalizePodUID(podUID);
  const out: PodProcess[] = [];
  for (const name of fs.readdirSync(procRoot)) {
    if (!/^\d+$/.test(name)) continue;
    const file = path.join(procRoot, name, 'cgroup');
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if (vanished(err)) continue;
      throw err;
    }
    const k = kubeletCgroupOf(parseProcCgroup(text, file));
    if (!k || k.podUID !== want) continue;
    out.push({ pid: Number(name), cgroupPath: k.path, ...(k.containerID !== undefined ? { containerID: k.containerID } : {}) });
  }
  return out.sort((a, b) => a.pid - b.pid);
}

/**
 * The cgroup identity of one process (for the handover vault's peer check). Undefined if the
 * process is not in a kubelet-made cgroup; throws ENOENT if the process does not exist.
 */
export function podOfProcess(pid: number, opts: { procRoot?: string } = {}): (KubeletCgroup & { readonly path: string }) | undefined {
  const file = path.join(opts.procRoot ?? '/proc', String(pid), 'cgroup');
  return kubeletCgroupOf(parseProcCgroup(fs.readFileSync(file, 'utf8'), file));
}
