/**
 * The webhook as the API server calls it: registered in a MutatingWebhookConfiguration
 * (failurePolicy Fail, HTTPS with caBundle) on the in-memory API server, which POSTs an
 * AdmissionReview on every pod CREATE and applies the JSONPatch. The checkpoint is read and
 * claimed through client-node (kubeCheckpointStore), so the resourceVersion precondition of the
 * claim is enforced by a real API implementation.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AdmissionregistrationV1Api, CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import { startFakeApiServer, type FakeApiServer } from '../support/apiserver/index.js';
import { kubeCheckpointStore } from '../../src/webhook/checkpoints.js';
import { DEFAULT_WEBHOOK_CONFIG, ENV_RESTORE_FROM } from '../../src/webhook/mutate.js';
import { startWebhookServer, type WebhookServer } from '../../src/webhook/server.js';
import { silentLogger } from '../../src/log/logger.js';
import { missing } from '../helpers/env.js';
import { makeCert } from './tls.js';
import { CRD_FILE } from '../e2e/support/cluster.js';

const noTools = missing({ tools: ['openssl'] }, 'webhook called by the API server');

describe.skipIf(noTools)('webhook called by the API server', () => {
  let srv: FakeApiServer;
  let hook: WebhookServer;
  let dir: string;
  let core: CoreV1Api;
  let custom: CustomObjectsApi;
  const NS = 'shop';

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-webhook-api-'));
    const { cert, key } = makeCert(dir);
    srv = await startFakeApiServer({ crds: [CRD_FILE] });
    hook = await startWebhookServer({
      addr: '127.0.0.1:0', tls: { certFile: cert, keyFile: key }, store: kubeCheckpointStore(srv.kubeConfig),
      config: DEFAULT_WEBHOOK_CONFIG, logger: silentLogger(),
    });
    core = srv.kubeConfig.makeApiClient(CoreV1Api);
    custom = srv.kubeConfig.makeApiClient(CustomObjectsApi);
    await core.createNamespace({ body: { metadata: { name: NS } } });
    await srv.kubeConfig.makeApiClient(AdmissionregistrationV1Api).createMutatingWebhookConfiguration({
      body: {
        metadata: { name: 'lockmig' },
        webhooks: [{
          name: 'restore.lockmig.dev', admissionReviewVersions: ['v1'], sideEffects: 'NoneOnDryRun', failurePolicy: 'Fail', timeoutSeconds: 10,
          clientConfig: { url: `${hook.url}/mutate-pods`, caBundle: fs.readFileSync(cert).toString('base64') },
          rules: [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'], scope: 'Namespaced' }],
        }],
      },
    });
    await custom.createNamespacedCustomObject({
      group: 'lockmig.dev', version: 'v1alpha1', namespace: NS, plural: 'lockcheckpoints',
      body: { apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name: 'cart-move', namespace: NS }, spec: { sourcePodName: 'cart-0', containers: ['cart'] } },
    });
  });

  afterAll(async () => {
    await hook?.close();
    await srv?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const restorePod = (name: string): V1Pod => ({
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace: NS, annotations: { 'lockmig.dev/restore-from': 'cart-move' } },
    spec: { containers: [{ name: 'cart', image: 'shop/cart:2', command: ['/cart'], args: ['--db', '/var/lib/cart/cart.db'], volumeMounts: [{ name: 'data', mountPath: '/var/lib/cart' }] }],
      volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'cart-data' } }] },
  });

  const setStatus = (status: Record<string, unknown>) => custom.patchNamespacedCustomObjectStatus(
    { group: 'lockmig.dev', version: 'v1alpha1', namespace: NS, plural: 'lockcheckpoints', name: 'cart-move', body: { status } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );

  it('denies pod creation while the checkpoint is not ready, with the reason in the API error', async () => {
    await setStatus({ phase: 'Dumping', nodeName: 'node-7' });
    const err = await core.createNamespacedPod({ namespace: NS, body: restorePod('cart-1') }).then(() => undefined, (e: unknown) => e as { code?: number; body?: string });
    expect(err?.code).toBe(403);
    expect(String(err?.body)).toContain('is not ready to restore from: its phase is Dumping');
    // pods that did not opt in are not affected
    const plain = await core.createNamespacedPod({ namespace: NS, body: { metadata: { name: 'web', namespace: NS }, spec: { containers: [{ name: 'w', image: 'nginx' }] } } });
    expect(plain.spec!.containers[0]!.command).toBeUndefined();
  });

  it('stores the wrapped pod and claims the checkpoint; of two racing pods exactly one wins', async () => {
    await setStatus({ phase: 'Dumped', nodeName: 'node-7' });
    const results = await Promise.allSettled([
      core.createNamespacedPod({ namespace: NS, body: restorePod('cart-a') }),
      core.createNamespacedPod({ namespace: NS, body: restorePod('cart-b') }),
    ]);
    const won = results.filter((r) => r.status === 'fulfilled') as PromiseFulfilledResult<V1Pod>[];
    const lost = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect(String((lost[0]!.reason as { body?: string }).body)).toContain('already restored by pod');
    const pod = won[0]!.value;
    const c = pod.spec!.containers[0]!;
    expect(c.command!.slice(c.command!.indexOf('restore'))).toEqual([
      'restore', '--image', '/lockmig/images/cart', '--timeout', '30', '--allow', '/var/lib/cart', '--state-file', '/lockmig/state/cart.json', '--', '/cart', '--db', '/var/lib/cart/cart.db',
    ]);
    expect(c.env).toContainEqual({ name: ENV_RESTORE_FROM, value: `${NS}/cart-move` });
    expect(pod.spec!.affinity!.nodeAffinity!.requiredDuringSchedulingIgnoredDuringExecution!.nodeSelectorTerms[0]!.matchFields)
      .toEqual([{ key: 'metadata.name', operator: 'In', values: ['node-7'] }]);
    const cp = (await custom.getNamespacedCustomObject({ group: 'lockmig.dev', version: 'v1alpha1', namespace: NS, plural: 'lockcheckpoints', name: 'cart-move' })) as { status: { restoredPod: { name: string } } };
    expect(cp.status.restoredPod.name).toBe(pod.metadata!.name);
  });

  it('fails closed when the webhook is down', async () => {
    await hook.close();
    const err = await core.createNamespacedPod({ namespace: NS, body: restorePod('cart-z') }).then(() => undefined, (e: unknown) => e as { code?: number });
    expect(err?.code).toBeGreaterThanOrEqual(400);
  });
});
