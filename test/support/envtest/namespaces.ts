/**
 * Test namespaces and identities on a real API server without a controller-manager (envtest) or
 * on any cluster (LOCKMIG_E2E_KUBECONFIG):
 *  - a namespace comes with its `default` ServiceAccount, which the ServiceAccount admission plugin
 *    requires before any pod can be created (the controller-manager creates it on a cluster; on a
 *    cluster that already did, the 409 is ignored);
 *  - cleanup strips the LockCheckpoint finalizers left in it and deletes it (on envtest it stays
 *    Terminating: nothing finalizes namespaces there, and the server is thrown away anyway);
 *  - ServiceAccount tokens come from the TokenRequest API, which the apiserver serves itself.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import { endpointOf, writeKubeconfig } from './kubeconfig.js';

export const randomSuffix = (): string => randomBytes(3).toString('hex');

const code = (e: unknown): number | undefined => (e as { code?: number }).code;

export interface TestNamespace {
  readonly name: string;
  cleanup(): Promise<void>;
}

/** Creates `<prefix>-<random>` (or exactly `name`) with its `default` ServiceAccount. */
export async function createTestNamespace(kc: KubeConfig, o: { prefix?: string; name?: string; labels?: Record<string, string> }): Promise<TestNamespace> {
  const core = kc.makeApiClient(CoreV1Api);
  const name = o.name ?? `${o.prefix ?? 'test'}-${randomSuffix()}`;
  await core.createNamespace({ body: { metadata: { name, labels: o.labels } } });
  await ensureServiceAccount(kc, name, 'default');
  return {
    name,
    async cleanup() {
      await stripCheckpointFinalizers(kc, name);
      // pods of virtual nodes have no kubelet to finish their deletion: do its final delete
      const pods = await core.listNamespacedPod({ namespace: name }).catch(() => ({ items: [] }));
      for (const p of pods.items) await core.deleteNamespacedPod({ name: p.metadata!.name!, namespace: name, gracePeriodSeconds: 0 }).catch(() => undefined);
      await core.deleteNamespace({ name }).catch(() => undefined);
    },
  };
}

export async function ensureServiceAccount(kc: KubeConfig, namespace: string, name: string): Promise<void> {
  try {
    await kc.makeApiClient(CoreV1Api).createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
  } catch (e) {
    if (code(e) !== 409) throw e;
  }
}

/** Removes the finalizers of every LockCheckpoint in the namespace (no-op when the CRD is absent). */
export async function stripCheckpointFinalizers(kc: KubeConfig, namespace: string): Promise<void> {
  const custom = kc.makeApiClient(CustomObjectsApi);
  const q = { group: 'lockmig.dev', version: 'v1alpha1', plural: 'lockcheckpoints', namespace };
  const list = (await custom.listNamespacedCustomObject(q).catch(() => ({ items: [] }))) as { items: Array<{ metadata: { name: string; finalizers?: string[] } }> };
  for (const i of list.items) {
    if (!i.metadata.finalizers?.length) continue;
    await custom.patchNamespacedCustomObject({ ...q, name: i.metadata.name, body: { metadata: { finalizers: null } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)).catch(() => undefined);
  }
}

/**
 * A kubeconfig acting as ServiceAccount `namespace/name` (created if missing), with a token from
 * the TokenRequest API: what a pod running as that ServiceAccount gets.
 */
export async function serviceAccountKubeconfig(kc: KubeConfig, dir: string, namespace: string, name: string, expirationSeconds = 3600): Promise<{ kubeConfig: KubeConfig; kubeconfigPath: string; token: string }> {
  await ensureServiceAccount(kc, namespace, name);
  const tr = await kc.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({
    name, namespace, body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: [], expirationSeconds } },
  });
  const token = tr.status?.token;
  if (!token) throw new Error(`TokenRequest for ${namespace}/${name} returned no token`);
  const kubeconfigPath = path.join(dir, `sa-${namespace}-${name}.kubeconfig`);
  fs.mkdirSync(dir, { recursive: true });
  const kubeConfig = writeKubeconfig(kubeconfigPath, endpointOf(kc), { token, user: `system:serviceaccount:${namespace}:${name}`, namespace });
  return { kubeConfig, kubeconfigPath, token };
}
