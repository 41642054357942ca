/**
 * Pure: which host processes belong to which container of the source pod, and which of them
 * the checkpoint asked for. Inputs are the pod object (its status names each container's ID,
 * `containerd://<64 hex>`) and the processes found by cgroup (src/proc/cgroup.ts).
 */
import type { V1ContainerStatus, V1Pod } from '@kubernetes/client-node';
import type { PodProcess } from '../proc/cgroup.js';

export interface ContainerProcesses {
  readonly name: string;
  readonly containerID: string;
  /** host pids, ascending */
  readonly pids: readonly number[];
}

export type Selection =
  | { readonly ok: true; readonly containers: readonly ContainerProcesses[]; readonly notes: readonly string[] }
  | { readonly ok: false; readonly reason: 'ProcessesNotFound' | 'ContainerNotFound' | 'ContainerNotRunning'; readonly message: string };

/** `containerd://abc…` → `abc…` (lower case); undefined when absent. */
export function bareContainerID(id: string | undefined): string | undefined {
  if (!id) return undefined;
  const i = id.indexOf('://');
  return (i >= 0 ? id.slice(i + 3) : id).toLowerCase();
}

/**
 * The UID the kubelet used for the pod's cgroups. For a static pod the API object is a mirror
 * whose metadata.uid differs from the kubelet's own UID; the kubelet's one is in the
 * `kubernetes.io/config.mirror` annotation (the config hash).
 */
export function cgroupPodUID(pod: V1Pod): string | undefined {
  return pod.metadata?.annotations?.['kubernetes.io/config.mirror'] || pod.metadata?.uid;
}

export function selectContainers(pod: V1Pod, procs: readonly PodProcess[], wanted: readonly string[]): Selection {
  const podName = `${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`;
  const specNames = [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])].map((c) => c.name);
  const unknown = wanted.filter((w) => !specNames.includes(w));
  if (unknown.length > 0) {
    return { ok: false, reason: 'ContainerNotFound', message: `pod ${podName} has no container ${unknown.map((n) => `"${n}"`).join(', ')} (it has ${specNames.map((n) => `"${n}"`).join(', ')})` };
  }
  if (procs.length === 0) {
    return {
      ok: false, reason: 'ProcessesNotFound',
      message: `no process of pod ${podName} (uid ${cgroupPodUID(pod) ?? '?'}) was found in any kubelet cgroup; the agent needs hostPID and the host's /proc`,
    };
  }
  // Regular containers and running sidecars (restartable init containers) can hold locks.
  const statuses: V1ContainerStatus[] = [...(pod.status?.containerStatuses ?? []), ...(pod.status?.initContainerStatuses ?? [])];
  const byID = new Map<string, string>();
  for (const s of statuses) {
    const id = bareContainerID(s.containerID);
    if (id) byID.set(id, s.name);
  }
  const pidsByName = new Map<string, number[]>();
  let unmapped = 0;
  for (const p of procs) {
    const name = p.containerID ? byID.get(p.containerID) : undefined;
    if (!name) { unmapped++; continue; } // the sandbox (pause) process, or the pod cgroup itself
    const list = pidsByName.get(name) ?? [];
    list.push(p.pid);
    pidsByName.set(name, list);
  }
  const notes: string[] = [];
  if (unmapped > 0) notes.push(`${unmapped} process(es) in the pod's cgroup belong to no container (the sandbox)`);
  const names = wanted.length > 0 ? wanted : (pod.spec?.containers ?? []).map((c) => c.name).filter((n) => pidsByName.has(n));
  const out: ContainerProcesses[] = [];
  for (const n of names) {
    const pids = pidsByName.get(n);
    const st = statuses.find((s) => s.name === n);
    if (!pids || pids.length === 0) {
      return {
        ok: false, reason: 'ContainerNotRunning',
        message: `container "${n}" of pod ${podName} has no running process (status containerID ${st?.containerID ?? 'none'}${st?.state?.running ? '' : ', not running'})`,
      };
    }
    out.push({ name: n, containerID: bareContainerID(st?.containerID) ?? '', pids: [...pids].sort((a, b) => a - b) });
  }
  if (out.length === 0) {
    return { ok: false, reason: 'ProcessesNotFound', message: `none of the processes of pod ${podName} belongs to one of its containers (container IDs in status: ${[...byID.keys()].map((k) => k.slice(0, 12)).join(', ') || 'none'})` };
  }
  for (const c of pod.spec?.containers ?? []) if (!names.includes(c.name)) notes.push(`container "${c.name}" not dumped (${wanted.length > 0 ? 'not in spec.containers' : 'no running process'})`);
  return { ok: true, containers: out, notes };
}

/** The container's top process: the one whose parent is not in the same container (its pid 1 unless the pod shares its pid namespace). */
export function topProcess(pids: readonly number[], ppidOf: (pid: number) => number | undefined): number | undefined {
  const set = new Set(pids);
  const tops = pids.filter((p) => { const pp = ppidOf(p); return pp !== undefined && !set.has(pp); });
  return tops.length > 0 ? Math.min(...tops) : undefined;
}
