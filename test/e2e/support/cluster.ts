/**
 * The Kubernetes side of the end-to-end suite, the same code against two back ends:
 *  - default: a real kube-apiserver started for the test file (test/support/envtest; etcd +
 *    kube-apiserver from KUBEBUILDER_ASSETS or the kit), CRD installed from crds/;
 *  - `LOCKMIG_E2E_KUBECONFIG=/path/kubeconfig`: any cluster (kind, minikube, …; the CRD must be
 *    installed: `kubectl apply -f crds/`). See docs/e2e.md.
 *
 * Pods are "virtual": they are bound (spec.nodeName) to a Node object that no kubelet serves, so
 * nothing on the cluster runs them; their processes are local processes in kubelet-named cgroups,
 * and the suite writes their status (containerStatuses with containerd IDs) itself, as a kubelet
 * would.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import {
  CoreV1Api, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions, type V1Pod,
} from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION, type LockCheckpoint } from '../../../src/api/index.js';
import { createTestNamespace, installCrd, startApiServer } from '../../support/envtest/index.js';

export const CRD_FILE = fileURLToPath(new URL('../../../crds/lockmig.dev_lockcheckpoints.yaml', import.meta.url));

/** True when the suite runs on its own API server (and so needs the Kubernetes test binaries). */
export const needsEnvtest = (): boolean => !process.env.LOCKMIG_E2E_KUBECONFIG;

export interface Cluster {
  readonly mode: 'envtest' | 'kubeconfig';
  readonly kc: KubeConfig;
  /** = kc (so a Cluster is a Target of chartIdentity) */
  readonly kubeConfig: KubeConfig;
  readonly kubeconfigPath: string;
  /** A private directory for identities' kubeconfigs (removed by close). */
  readonly dir: string;
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
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-e2e-ids-'));
    return {
      mode: 'kubeconfig', kc, kubeConfig: kc, kubeconfigPath: real, dir, core: kc.makeApiClient(CoreV1Api), custom: kc.makeApiClient(CustomObjectsApi),
      close: async () => fs.rmSync(dir, { recursive: true, force: true }),
    };
  }
  const api = await startApiServer();
  try {
    await installCrd(api);
  } catch (err) {
    await api.stop();
    throw err;
  }
  const kc = api.kubeConfig;
  return { mode: 'envtest', kc, kubeConfig: kc, kubeconfigPath: api.kubeconfigPath, dir: api.dir, core: kc.makeApiClient(CoreV1Api), custom: kc.makeApiClient(CustomObjectsApi), close: () => api.stop() };
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

/** What the kubelet does once a pod's containers are gone: the final, immediate delete. */
export async function deletePodNow(c: Cluster, namespace: string, name: string): Promise<void> {
  await c.core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 });
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
