/**
 * Virtual pods for the agent test on a real kube-apiserver (test/support/envtest): pods bound
 * (spec.nodeName) to a Node object no kubelet serves, whose containers are local processes in
 * cgroups named the way the kubelet and containerd name them (under the real cgroup2 mount),
 * with the status a kubelet would write. The real-node suite (test/node) runs real pods; this is
 * the agent's own integration test, in-process and in seconds.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig, type V1Pod,
} from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION, type LockCheckpoint } from '../../../src/api/index.js';
import { findCgroupMounts, kubeletCgroupPath, type CgroupDriver, type QosClass } from '../../../src/proc/cgroup.js';
import { createTestNamespace, installCrd, startApiServer } from '../../support/envtest/index.js';

/** The workload program of the real-node suite: takes real locks, reports them as one JSON line. */
export const HOLDER = fileURLToPath(new URL('../../node/images/workload/holder.py', import.meta.url));

export interface Cluster {
  readonly kc: KubeConfig;
  /** = kc (so a Cluster is a Target of chartIdentity) */
  readonly kubeConfig: KubeConfig;
  readonly kubeconfigPath: string;
  /** The server's private directory (identities' kubeconfigs go there). */
  readonly dir: string;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  close(): Promise<void>;
}

/** Its own etcd + kube-apiserver, with the CRD from crds/ installed. */
export async function connectCluster(): Promise<Cluster> {
  const api = await startApiServer();
  try {
    await installCrd(api);
  } catch (err) {
    await api.stop();
    throw err;
  }
  const kc = api.kubeConfig;
  return { kc, kubeConfig: kc, kubeconfigPath: api.kubeconfigPath, dir: api.dir, core: kc.makeApiClient(CoreV1Api), custom: kc.makeApiClient(CustomObjectsApi), close: () => api.stop() };
}

export const suffix = () => randomBytes(3).toString('hex');
export const containerID = () => randomBytes(32).toString('hex');

const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** A namespace (with its default ServiceAccount) and a Node object no kubelet serves (deleted by `cleanup`). */
export async function setupNamespaceAndNode(c: Cluster, tag: string): Promise<{ namespace: string; node: string; cleanup: () => Promise<void> }> {
  const ns = await createTestNamespace(c.kc, { prefix: `lockmig-e2e-${tag}`, labels: { 'lockmig.dev/e2e': 'true' } });
  const node = `lockmig-e2e-node-${suffix()}`;
  await c.core.createNode({
    body: {
      metadata: { name: node, labels: { 'kubernetes.io/hostname': node, 'lockmig.dev/e2e': 'true' } },
      // Keep real schedulers and controllers away from this node: nothing must try to run the pods.
      spec: { taints: [{ key: 'lockmig.dev/e2e', value: 'virtual', effect: 'NoSchedule' }], unschedulable: true },
    },
  });
  return {
    namespace: ns.name, node,
    cleanup: async () => {
      await ns.cleanup();
      await c.core.deleteNode({ name: node }).catch(() => undefined);
    },
  };
}

/**
 * Create a pod bound to `node` and give it a Running status naming each container's ID, as the
 * kubelet would once the containers run. Returns the stored pod (with its UID).
 */
export async function createRunningPod(c: Cluster, pod: V1Pod, ids: Readonly<Record<string, string>>): Promise<V1Pod> {
  const created = await c.core.createNamespacedPod({ namespace: pod.metadata!.namespace!, body: pod });
  const now = new Date();
  const status = {
    phase: 'Running',
    conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: now }],
    containerStatuses: (pod.spec?.containers ?? []).map((ct) => ({
      name: ct.name, image: ct.image ?? 'x', imageID: '', ready: true, restartCount: 0, started: true,
      containerID: `containerd://${ids[ct.name]}`, state: { running: { startedAt: now } },
    })),
  };
  return c.core.replaceNamespacedPodStatus({ name: created.metadata!.name!, namespace: created.metadata!.namespace!, body: { ...created, status } as V1Pod });
}

export async function createCheckpoint(c: Cluster, body: Record<string, unknown>): Promise<void> {
  const md = body.metadata as { namespace: string };
  await c.custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: md.namespace, plural: PLURAL, body });
}

export async function getCheckpoint(c: Cluster, namespace: string, name: string): Promise<LockCheckpoint | undefined> {
  try {
    return (await c.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL, name })) as LockCheckpoint;
  } catch (err) {
    if ((err as { code?: number }).code === 404) return undefined;
    throw err;
  }
}

export async function patchCheckpoint(c: Cluster, namespace: string, name: string, body: unknown, status = false): Promise<void> {
  const p = { group: GROUP, version: VERSION, namespace, plural: PLURAL, name, body };
  if (status) await c.custom.patchNamespacedCustomObjectStatus(p, merge);
  else await c.custom.patchNamespacedCustomObject(p, merge);
}

/** Poll until `pred` holds for the checkpoint (bounded); returns it. */
export async function waitForCheckpoint(c: Cluster, namespace: string, name: string, pred: (cp: LockCheckpoint | undefined) => boolean, what: string, timeoutMs = 30_000): Promise<LockCheckpoint | undefined> {
  const deadline = Date.now() + timeoutMs;
  let last: LockCheckpoint | undefined;
  while (Date.now() < deadline) {
    last = await getCheckpoint(c, namespace, name);
    if (pred(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}; last status: ${JSON.stringify(last?.status)}`);
}

/** A set of kubelet-named cgroups under a private prefix; `cleanup` kills members and removes them. */
export class KubeletCgroups {
  readonly mount: string;
  readonly prefix: string;
  private readonly made: string[] = [];
  private readonly kids: ChildProcess[] = [];

  constructor(tag: string) {
    const m = findCgroupMounts().cgroup2;
    if (!m) throw new Error('no cgroup2 mount in /proc/self/mounts');
    this.mount = m;
    this.prefix = `lockmig-${tag}-${process.pid}`;
  }

  /** Create (mkdir -p) the cgroup of one container; returns its directory. */
  container(o: { podUID: string; containerID: string; driver?: CgroupDriver; qos?: QosClass }): string {
    const rel = kubeletCgroupPath({ driver: o.driver ?? 'systemd', qos: o.qos ?? 'Burstable', podUID: o.podUID, containerID: o.containerID, runtime: 'containerd' });
    let cur = this.mount;
    for (const seg of `${this.prefix}${rel}`.split('/').filter(Boolean)) {
      cur = path.join(cur, seg);
      if (!fs.existsSync(cur)) { fs.mkdirSync(cur); this.made.push(cur); }
    }
    return cur;
  }

  /**
   * Start `argv` inside cgroup `dir` from its first instruction (a shell moves itself in, then
   * execs), and wait for its first stdout line.
   */
  async start(dir: string, argv: readonly string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 20_000): Promise<{ child: ChildProcess; pid: number; line: string; stderr: () => string }> {
    const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.kids.push(child);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`${argv.join(' ')}: no output within ${timeoutMs} ms; stderr: ${err}`)), timeoutMs);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const nl = out.indexOf('\n');
        if (nl >= 0) { clearTimeout(timer); resolve(out.slice(0, nl)); }
      });
      child.once('exit', (code, sig) => { clearTimeout(timer); reject(new Error(`${argv.join(' ')} exited (${code ?? sig}) before reporting; stderr: ${err}`)); });
    });
    return { child, pid: child.pid!, line, stderr: () => err };
  }

  async cleanup(): Promise<void> {
    for (const k of this.kids) if (k.exitCode === null && k.signalCode === null) k.kill('SIGKILL');
    await Promise.all(this.kids.map((k) => (k.exitCode !== null || k.signalCode !== null ? undefined : new Promise((r) => k.once('exit', r)))));
    for (const dir of [...this.made].reverse()) {
      for (let i = 0; i < 100; i++) {
        try { fs.rmdirSync(dir); break; } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') break;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
  }
}
