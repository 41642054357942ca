/**
 * The Kubernetes side of the end-to-end suite, the same code against two back ends:
 *  - default: D's in-memory API server (test/support/apiserver), CRD installed from crds/;
 *  - `LOCKMIG_E2E_KUBECONFIG=/path/kubeconfig`: a real cluster (the CRD must be installed:
 *    `kubectl apply -f crds/`). See docs/e2e.md.
 *
 * Pods are "virtual": they are bound (spec.nodeName) to a Node object that no kubelet serves, so
 * nothing on the cluster runs them; their processes are local processes in kubelet-named cgroups,
 * and the suite writes their status (containerStatuses with containerd IDs) itself, as a kubelet
 * would.
 */
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import {
  CoreV1Api, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions, type V1Pod,
} from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION, type LockCheckpoint } from '../../../src/api/index.js';

export const CRD_FILE = fileURLToPath(new URL('../../../crds/lockmig.dev_lockcheckpoints.yaml', import.meta.url));

export interface Cluster {
  readonly mode: 'fake' | 'real';
  readonly kc: KubeConfig;
  readonly kubeconfigPath: string;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  close(): Promise<void>;
}

export async function connectCluster(): Promise<Cluster> {
  const real = process.env.LOCKMIG_E2E_KUBECONFIG;
  if (real) {
    if (!fs.existsSync(real)) throw new Error(`LOCKMIG_E2E_KUBECONFIG=${real} does not exist`);
    const kc = new KubeConfig();
    kc.loadFromFile(real);
    return { mode: 'real', kc, kubeconfigPath: real, core: kc.makeApiClient(CoreV1Api), custom: kc.makeApiClient(CustomObjectsApi), close: async () => undefined };
  }
  const { startFakeApiServer } = await import('../../support/apiserver/index.js');
  const srv = await startFakeApiServer({ crds: [CRD_FILE] });
  const kc = srv.kubeConfig;
  return { mode: 'fake', kc, kubeconfigPath: srv.kubeconfigPath, core: kc.makeApiClient(CoreV1Api), custom: kc.makeApiClient(CustomObjectsApi), close: () => srv.close() };
}

export const suffix = () => randomBytes(3).toString('hex');
export const containerID = () => randomBytes(32).toString('hex');

const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** A namespace and a Node object no kubelet serves (deleted by `cleanup`). */
export async function setupNamespaceAndNode(c: Cluster, tag: string): Promise<{ namespace: string; node: string; cleanup: () => Promise<void> }> {
  const namespace = `lockmig-e2e-${tag}-${suffix()}`;
  const node = `lockmig-e2e-node-${suffix()}`;
  await c.core.createNamespace({ body: { metadata: { name: namespace, labels: { 'lockmig.dev/e2e': 'true' } } } });
  await c.core.createNode({
    body: {
      metadata: { name: node, labels: { 'kubernetes.io/hostname': node, 'lockmig.dev/e2e': 'true' } },
      // Keep real schedulers and controllers away from this node: nothing must try to run the pods.
      spec: { taints: [{ key: 'lockmig.dev/e2e', value: 'virtual', effect: 'NoSchedule' }], unschedulable: true },
    },
  });
  return {
    namespace, node,
    cleanup: async () => {
      await c.core.deleteNamespace({ name: namespace }).catch(() => undefined);
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
