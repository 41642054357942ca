/**
 * Live locks of the pods on this node, for `kubectl lockmig locks` (GET /locks on the agent's
 * health server, reached through the API server's pod proxy) and the per-pod lock metrics.
 *
 * The kernel side is src/proc/live-locks.ts (held locks with fd and path, waiters paired with their
 * holders); this file says which pod and container each host pid belongs to (kubelet cgroups →
 * pod UID and container ID → the pod object's container statuses), the pid inside the container
 * (NSpid), and which volume each path lives on (the container's volumeMounts, longest mount path
 * first → the pod's volume: persistentVolumeClaim, hostPath, emptyDir, …).
 */
import fs from 'node:fs';
import type { V1Pod, V1Volume } from '@kubernetes/client-node';
import { kubeletCgroupOf, parseProcCgroup } from '../proc/cgroup.js';
import { readStatus } from '../proc/status.js';
import { snapshotLocks, type LiveLock, type LiveWaiter, type LockRef, type LockSnapshot } from '../proc/live-locks.js';
import { Gauge, type Registry } from 'prom-client';
import { bareContainerID, cgroupPodUID } from './select.js';

/** Where a path lives in the pod: the volume mounted there. */
export interface VolumeRef {
  readonly name: string;
  /** the volume source's field name: persistentVolumeClaim, hostPath, emptyDir, configMap, nfs, … */
  readonly type: string;
  readonly mountPath: string;
  readonly claimName?: string;
  readonly hostPath?: string;
}

/** The process side of a row: who, in Kubernetes terms. Empty namespace/pod: a host process (not in a pod). */
export interface Owner {
  readonly namespace: string;
  readonly pod: string;
  readonly container: string;
  /** host pid; null when unknown */
  readonly hostPid: number | null;
  /** pid inside the container (innermost NSpid); null when unknown */
  readonly pid: number | null;
}

export interface LockRow extends Owner {
  readonly fd: number;
  readonly fds: readonly number[];
  readonly kind: LiveLock['kind'];
  readonly type: string;
  readonly start: string;
  readonly end: string;
  /** as the process sees it */
  readonly path: string | null;
  readonly volume: VolumeRef | null;
  /** `maj:min:ino` as /proc/locks prints it: rows with the same key are the same file */
  readonly file: string;
}

export interface WaiterRow extends Owner {
  readonly fd: number | null;
  readonly kind: LiveLock['kind'];
  readonly type: string;
  readonly start: string;
  readonly end: string;
  readonly path: string | null;
  readonly pathFrom: LiveWaiter['pathFrom'];
  readonly volume: VolumeRef | null;
  readonly file: string;
  readonly depth: number;
  /** ms since the agent first saw this waiter (0 on first sight) */
  readonly waitingMs: number;
  /** what it waits for: the held lock at the head of its chain */
  readonly holder: HolderRef;
}

export interface HolderRef extends Owner {
  readonly fd: number | null;
  readonly kind: LiveLock['kind'];
  readonly type: string;
  readonly start: string;
  readonly end: string;
  readonly path: string | null;
}

/** An fd open on a locked file with no lock (and no wait) of its own: a reader, or a process polling for the lock (SQLite's busy wait). */
export interface OpenRow extends Owner {
  readonly fd: number;
  readonly path: string | null;
  readonly volume: VolumeRef | null;
  readonly file: string;
}

export interface NodeLocks {
  readonly node: string;
  readonly takenAt: string;
  readonly locks: readonly LockRow[];
  readonly waiters: readonly WaiterRow[];
  /** absent from agents before this field existed */
  readonly opens?: readonly OpenRow[];
  readonly stats: LockSnapshot['stats'] & { readonly pods: number };
}

/** host pid → (pod UID, container ID) for every process in a kubelet cgroup. */
export function podProcesses(procRoot = '/proc'): Map<number, { podUID: string; containerID?: string }> {
  const out = new Map<number, { podUID: string; containerID?: string }>();
  for (const name of fs.readdirSync(procRoot)) {
    const c = name.charCodeAt(0);
    if (c < 48 || c > 57) continue;
    let text: string;
    try { text = fs.readFileSync(`${procRoot}/${name}/cgroup`, 'utf8'); } catch { continue; }
    let k;
    try { k = kubeletCgroupOf(parseProcCgroup(text)); } catch { continue; }
    if (k) out.set(Number(name), { podUID: k.podUID, ...(k.containerID ? { containerID: k.containerID } : {}) });
  }
  return out;
}

const VOLUME_TYPES = ['persistentVolumeClaim', 'hostPath', 'emptyDir', 'configMap', 'secret', 'projected', 'nfs', 'csi', 'ephemeral', 'downwardAPI', 'iscsi', 'cephfs', 'rbd', 'glusterfs', 'fc', 'local'];

function volumeType(v: V1Volume): string {
  for (const t of VOLUME_TYPES) if ((v as unknown as Record<string, unknown>)[t] !== undefined) return t;
  return Object.keys(v).find((k) => k !== 'name') ?? 'unknown';
}

/** The volume of `pod`'s container `container` that `path` (as the container sees it) lives on. */
export function volumeOf(pod: V1Pod, container: string, path: string | null): VolumeRef | null {
  if (!path || !path.startsWith('/')) return null;
  const spec = pod.spec;
  const c = [...(spec?.containers ?? []), ...(spec?.initContainers ?? [])].find((x) => x.name === container);
  let best: { name: string; mountPath: string } | null = null;
  for (const m of c?.volumeMounts ?? []) {
    const mp = m.mountPath.replace(/\/+$/, '') || '/';
    if (!(path === mp || path.startsWith(mp === '/' ? '/' : `${mp}/`))) continue;
    if (!best || mp.length > best.mountPath.length) best = { name: m.name, mountPath: mp };
  }
  if (!best) return null;
  const v = (spec?.volumes ?? []).find((x) => x.name === best!.name);
  if (!v) return { name: best.name, type: 'unknown', mountPath: best.mountPath };
  return {
    name: best.name, type: volumeType(v), mountPath: best.mountPath,
    ...(v.persistentVolumeClaim ? { claimName: v.persistentVolumeClaim.claimName } : {}),
    ...(v.hostPath ? { hostPath: v.hostPath.path } : {}),
  };
}

/** Keeps, between snapshots, when each waiter was first seen (the age of the oldest one is a metric). */
export class WaiterClock {
  private seen = new Map<string, number>();
  /** Records this snapshot's waiters; returns each one's age in ms (in order). Forgets waiters that are gone. */
  observe(waiters: readonly LiveWaiter[], now: number): number[] {
    const next = new Map<string, number>();
    const ages = waiters.map((w) => {
      const key = `${w.pid ?? '?'}/${w.tid ?? '?'}/${w.fd ?? '?'}/${w.kind}/${w.type}/${w.fileKey}/${w.start}/${w.end}`;
      const since = this.seen.get(key) ?? next.get(key) ?? now;
      next.set(key, since);
      return now - since;
    });
    this.seen = next;
    return ages;
  }
}

export interface CollectOptions {
  readonly node: string;
  /** every pod on this node (the agent lists them) */
  readonly pods: readonly V1Pod[];
  readonly procRoot?: string;
  readonly clock?: WaiterClock;
  readonly now?: number;
  /** for tests: the snapshot function */
  readonly snapshot?: typeof snapshotLocks;
  /** for tests: host pid → pod/container (default: a scan of procRoot) */
  readonly processes?: Map<number, { podUID: string; containerID?: string }>;
}

/** The live locks of every pod on this node, in Kubernetes terms. */
export function collectNodeLocks(o: CollectOptions): NodeLocks {
  const procs = o.processes ?? podProcesses(o.procRoot);
  const byUID = new Map<string, V1Pod>();
  for (const p of o.pods) { const u = cgroupPodUID(p); if (u) byUID.set(u, p); }
  const containerOf = (pod: V1Pod, id: string | undefined): string => {
    if (!id) return '';
    const st = [...(pod.status?.containerStatuses ?? []), ...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.ephemeralContainerStatuses ?? [])];
    return st.find((s) => bareContainerID(s.containerID) === id)?.name ?? '';
  };
  // only the processes of pods we know (a pod deleted a moment ago is skipped)
  const pids = [...procs].filter(([, v]) => byUID.has(v.podUID)).map(([pid]) => pid);
  const snap = (o.snapshot ?? snapshotLocks)({ pids });
  const nsPid = new Map<number, number | null>();
  const owner = (hostPid: number | null): Owner & { podObj?: V1Pod } => {
    if (hostPid === null) return { namespace: '', pod: '', container: '', hostPid: null, pid: null };
    let inner = nsPid.get(hostPid);
    if (inner === undefined) {
      try { const s = readStatus(hostPid); inner = s.nsPids[s.nsPids.length - 1] ?? null; } catch { inner = null; }
      nsPid.set(hostPid, inner);
    }
    const pr = procs.get(hostPid);
    const pod = pr ? byUID.get(pr.podUID) : undefined;
    if (!pod) return { namespace: '', pod: '', container: '', hostPid, pid: inner };
    return { namespace: pod.metadata?.namespace ?? '', pod: pod.metadata?.name ?? '', container: containerOf(pod, pr!.containerID), hostPid, pid: inner, podObj: pod };
  };
  const strip = <T extends { podObj?: V1Pod }>(x: T): Omit<T, 'podObj'> => { const { podObj: _, ...rest } = x; return rest; };
  const locks: LockRow[] = snap.locks.map((l) => {
    const w = owner(l.pid);
    return {
      ...strip(w), fd: l.fd, fds: l.fds, kind: l.kind, type: l.type, start: String(l.start), end: String(l.end), path: l.path,
      volume: w.podObj ? volumeOf(w.podObj, w.container, l.path) : null, file: l.fileKey,
    };
  });
  const holderOf = (ref: LockRef): HolderRef => {
    const l = ref.locks.length > 0 ? snap.locks[ref.locks[0]!]! : undefined;
    const w = owner(l ? l.pid : ref.pid > 0 ? ref.pid : null);
    return { ...strip(w), fd: l?.fd ?? null, kind: ref.kind, type: ref.type, start: String(ref.start), end: String(ref.end), path: l?.path ?? null };
  };
  const ages = (o.clock ?? new WaiterClock()).observe(snap.waiters, o.now ?? Date.now());
  const waiters: WaiterRow[] = snap.waiters.map((x, i) => {
    const w = owner(x.pid);
    const holder = holderOf(x.holder);
    // a waiter's path comes from the holder when its own fd is unknown: that is the holder's view
    const volume = w.podObj && x.pathFrom === 'fd' ? volumeOf(w.podObj, w.container, x.path) : null;
    return {
      ...strip(w), fd: x.fd, kind: x.kind, type: x.type, start: String(x.start), end: String(x.end), path: x.path, pathFrom: x.pathFrom,
      volume, file: x.fileKey, depth: x.depth, waitingMs: ages[i]!, holder,
    };
  });
  const opens: OpenRow[] = snap.opens.map((x) => {
    const w = owner(x.pid);
    return { ...strip(w), fd: x.fd, path: x.path, volume: w.podObj ? volumeOf(w.podObj, w.container, x.path) : null, file: x.fileKey };
  });
  return { node: o.node, takenAt: snap.takenAt, locks, waiters, opens, stats: { ...snap.stats, pods: new Set(pids.map((p) => procs.get(p)!.podUID)).size } };
}

/** The rows of `namespace` (and `pod`): locks there, and waiters there or waiting for a holder there. */
export function filterNodeLocks(n: NodeLocks, namespace?: string, pod?: string): NodeLocks {
  const mine = (o: Owner) => (namespace === undefined || o.namespace === namespace) && (pod === undefined || o.pod === pod);
  return { ...n, locks: n.locks.filter(mine), waiters: n.waiters.filter((w) => mine(w) || mine(w.holder)), opens: (n.opens ?? []).filter(mine) };
}

/** How long the agent reuses its list of the node's pods (a pod younger than that may show as unknown: it is skipped). */
export const POD_LIST_TTL_MS = 5_000;

export interface LiveLockServiceOptions {
  readonly node: string;
  /** every pod bound to this node (the agent: a list with fieldSelector spec.nodeName) */
  readonly listPods: () => Promise<readonly V1Pod[]>;
  readonly procRoot?: string;
  /** register the per-pod lock gauges here */
  readonly registry?: Registry;
  readonly now?: () => number;
}

/**
 * What the agent serves: `GET /locks?namespace=&pod=` (JSON NodeLocks) and, at scrape time, the
 * gauges lockmig_agent_pod_locks, lockmig_agent_pod_lock_waiters and
 * lockmig_agent_pod_lock_wait_seconds. One snapshot serves every gauge of a scrape (and requests
 * arriving within the same second).
 */
export class LiveLockService {
  private readonly clock = new WaiterClock();
  private last?: { at: number; value: Promise<NodeLocks> };
  /** the node's pod list, reused for POD_LIST_TTL_MS: a scrape every 15 s and a burst of requests cost one list */
  private pods?: { at: number; value: Promise<readonly V1Pod[]> };

  constructor(private readonly o: LiveLockServiceOptions) {
    if (o.registry) this.register(o.registry);
  }

  /** The node's locks (a fresh snapshot unless one is less than 1 s old). */
  current(): Promise<NodeLocks> {
    const now = this.o.now?.() ?? Date.now();
    if (this.last && now - this.last.at < 1000) return this.last.value;
    const value = (async () => {
      const processes = podProcesses(this.o.procRoot);
      let pods = await this.podList(now, false);
      // a pod younger than the list (its processes are here, its object is not): list again, once
      const known = new Set(pods.map((p) => cgroupPodUID(p)));
      if ([...processes.values()].some((x) => !known.has(x.podUID)) && now - this.pods!.at > 1000) pods = await this.podList(now, true);
      return collectNodeLocks({ node: this.o.node, pods, processes, clock: this.clock, now });
    })();
    this.last = { at: now, value };
    value.catch(() => { if (this.last?.value === value) this.last = undefined; });
    return value;
  }

  private podList(now: number, force: boolean): Promise<readonly V1Pod[]> {
    if (force || !this.pods || now - this.pods.at >= POD_LIST_TTL_MS) {
      const value = this.o.listPods();
      this.pods = { at: now, value };
      value.catch(() => { if (this.pods?.value === value) this.pods = undefined; });
    }
    return this.pods.value;
  }

  /** The HTTP handler of GET /locks. */
  async handle(url: URL): Promise<{ code: number; body: string; type: string }> {
    const ns = url.searchParams.get('namespace') ?? undefined;
    const pod = url.searchParams.get('pod') ?? undefined;
    const bad = [...url.searchParams.keys()].filter((k) => k !== 'namespace' && k !== 'pod');
    if (bad.length > 0) return { code: 400, body: `${JSON.stringify({ error: `unknown parameter(s): ${bad.join(', ')} (known: namespace, pod)` })}\n`, type: 'application/json' };
    if (pod !== undefined && ns === undefined) return { code: 400, body: `${JSON.stringify({ error: 'pod needs namespace' })}\n`, type: 'application/json' };
    try {
      const n = filterNodeLocks(await this.current(), ns, pod);
      return { code: 200, body: `${JSON.stringify(n)}\n`, type: 'application/json' };
    } catch (err) {
      return { code: 500, body: `${JSON.stringify({ error: (err as Error).message })}\n`, type: 'application/json' };
    }
  }

  private register(registry: Registry): void {
    const self = this;
    const key = (o: Owner) => `${o.namespace}\u0000${o.pod}\u0000${o.container}`;
    new Gauge({
      name: 'lockmig_agent_pod_locks', help: 'File locks held right now by the processes of each pod on this node (a lock shown on several fds of one process counts once)',
      labelNames: ['namespace', 'pod', 'container', 'kind', 'type'], registers: [registry],
      async collect() {
        this.reset();
        const n = await self.current().catch(() => null);
        if (!n) return;
        for (const l of n.locks) if (l.pod) this.inc({ namespace: l.namespace, pod: l.pod, container: l.container, kind: l.kind, type: l.type });
      },
    });
    new Gauge({
      name: 'lockmig_agent_pod_lock_waiters', help: 'Processes of each pod on this node blocked right now waiting for a file lock (F_SETLKW, F_OFD_SETLKW, flock)',
      labelNames: ['namespace', 'pod', 'container'], registers: [registry],
      async collect() {
        this.reset();
        const n = await self.current().catch(() => null);
        if (!n) return;
        for (const w of n.waiters) if (w.pod) this.inc({ namespace: w.namespace, pod: w.pod, container: w.container });
      },
    });
    new Gauge({
      name: 'lockmig_agent_pod_lock_wait_seconds', help: 'How long the longest-waiting blocked process of each pod has waited for a file lock, as seen by this agent (from the first snapshot that showed it; snapshots are taken at each scrape and /locks request)',
      labelNames: ['namespace', 'pod', 'container'], registers: [registry],
      async collect() {
        this.reset();
        const n = await self.current().catch(() => null);
        if (!n) return;
        const oldest = new Map<string, { o: Owner; ms: number }>();
        for (const w of n.waiters) {
          if (!w.pod) continue;
          const k = key(w);
          const prev = oldest.get(k);
          if (!prev || w.waitingMs > prev.ms) oldest.set(k, { o: w, ms: w.waitingMs });
        }
        for (const { o, ms } of oldest.values()) this.set({ namespace: o.namespace, pod: o.pod, container: o.container }, ms / 1000);
      },
    });
  }
}
