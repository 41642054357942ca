/**
 * The webhook as a real kube-apiserver calls it: the MutatingWebhookConfiguration is the one
 * `helm template` renders from charts/lockmig (rules, objectSelector, namespaceSelector,
 * failurePolicy Fail, sideEffects NoneOnDryRun, timeout, reinvocation), with only its clientConfig
 * pointed at the test's HTTPS server (url + caBundle). The webhook reads and claims the checkpoint
 * as the chart's webhook ServiceAccount, so the resourceVersion precondition of the claim and the
 * webhook's RBAC are enforced by the real server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AdmissionregistrationV1Api, CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type V1MutatingWebhookConfiguration, type V1Pod } from '@kubernetes/client-node';
import { kubeCheckpointStore } from '../../src/webhook/checkpoints.js';
import { DEFAULT_WEBHOOK_CONFIG, ENV_RESTORE_FROM } from '../../src/webhook/mutate.js';
import { startWebhookServer, type WebhookServer } from '../../src/webhook/server.js';
import { silentLogger } from '../../src/log/logger.js';
import { missing } from '../helpers/env.js';
import { makeCert } from './tls.js';
import {
  chartIdentity, createTestNamespace, helmTemplate, installCrd, kubectl, startApiServer, type KubeApiServer,
} from '../support/envtest/index.js';

const noTools = missing({ tools: ['openssl'], k8s: true }, 'webhook called by the API server');
const CK = { group: 'lockmig.dev', version: 'v1alpha1', plural: 'lockcheckpoints' };

describe.skipIf(noTools)('webhook called by the API server', () => {
  let api: KubeApiServer;
  let hook: WebhookServer;
  let dir: string;
  let core: CoreV1Api;
  let custom: CustomObjectsApi;
  let NS = '';
  let mwc: V1MutatingWebhookConfiguration;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-webhook-api-'));
    const { cert, key } = makeCert(dir);
    api = await startApiServer();
    await installCrd(api);
    core = api.kubeConfig.makeApiClient(CoreV1Api);
    custom = api.kubeConfig.makeApiClient(CustomObjectsApi);
    NS = (await createTestNamespace(api.kubeConfig, { prefix: 'shop' })).name;
    const release = await createTestNamespace(api.kubeConfig, { prefix: 'lockmig-system' });
    const id = await chartIdentity(api, 'webhook', release.name);
    hook = await startWebhookServer({
      addr: '127.0.0.1:0', tls: { certFile: cert, keyFile: key }, store: kubeCheckpointStore(id.kubeConfig),
      config: DEFAULT_WEBHOOK_CONFIG, logger: silentLogger(),
      pods: {
        get: async (namespace, name) => {
          try { return await id.kubeConfig.makeApiClient(CoreV1Api).readNamespacedPod({ namespace, name }); } catch (err) { if ((err as { code?: number }).code === 404) return undefined; throw err; }
        },
        namespaceLabels: async () => ({}),
      },
    });
    const { docs } = await helmTemplate({ namespace: release.name, showOnly: ['templates/webhook-mutatingwebhookconfiguration.yaml'] });
    const rendered = docs.find((d) => d.kind === 'MutatingWebhookConfiguration')!;
    for (const w of rendered.webhooks) w.clientConfig = { url: `${hook.url}/mutate-pods`, caBundle: fs.readFileSync(cert).toString('base64') };
    mwc = await api.kubeConfig.makeApiClient(AdmissionregistrationV1Api).createMutatingWebhookConfiguration({ body: rendered as V1MutatingWebhookConfiguration });
    await custom.createNamespacedCustomObject({
      ...CK, namespace: NS,
      body: { apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name: 'cart-move', namespace: NS }, spec: { sourcePodName: 'cart-0', containers: ['cart'] } },
    });
  }, 120_000);

  afterAll(async () => {
    await hook?.close();
    await api?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const restorePod = (name: string, labels: Record<string, string> = { 'lockmig.dev/restore': 'true' }): V1Pod => ({
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace: NS, labels, annotations: { 'lockmig.dev/restore-from': 'cart-move' } },
    spec: { containers: [{ name: 'cart', image: 'shop/cart:2', command: ['/cart'], args: ['--db', '/var/lib/cart/cart.db'], volumeMounts: [{ name: 'data', mountPath: '/var/lib/cart' }] }],
      volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'cart-data' } }] },
  });

  const setStatus = (status: Record<string, unknown>) => custom.patchNamespacedCustomObjectStatus(
    { ...CK, namespace: NS, name: 'cart-move', body: { status } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
  const getCk = async () => (await custom.getNamespacedCustomObject({ ...CK, namespace: NS, name: 'cart-move' })) as { status?: { restoredPod?: { name: string } } };

  it('is registered as the chart renders it (only clientConfig replaced)', () => {
    const w = mwc.webhooks![0]!;
    expect(w).toMatchObject({ name: 'restore.lockmig.dev', failurePolicy: 'Fail', sideEffects: 'NoneOnDryRun', reinvocationPolicy: 'IfNeeded', matchPolicy: 'Equivalent' });
    expect(w.objectSelector).toEqual({ matchLabels: { 'lockmig.dev/restore': 'true' } });
  });

  it('denies pod creation while the checkpoint is not ready, with the reason in the API error', async () => {
    await setStatus({ phase: 'Dumping', nodeName: 'node-7' });
    const err = await core.createNamespacedPod({ namespace: NS, body: restorePod('cart-1') }).then(() => undefined, (e: unknown) => e as { code?: number; body?: string });
    expect(err?.code).toBe(403);
    const msg = (JSON.parse(String(err?.body)) as { message: string }).message;
    expect(msg).toContain('admission webhook "restore.lockmig.dev" denied the request: lockmig: LockCheckpoint');
    expect(msg).toContain('is not ready to restore from: its phase is Dumping');
    // pods that did not opt in never reach the webhook (objectSelector), even while it denies everything
    const plain = await core.createNamespacedPod({ namespace: NS, body: { metadata: { name: 'web', namespace: NS }, spec: { containers: [{ name: 'w', image: 'nginx' }] } } });
    expect(plain.spec!.containers[0]!.command).toBeUndefined();
  });

  it('a server-side dry run is mutated but claims nothing (sideEffects NoneOnDryRun)', async () => {
    await setStatus({ phase: 'Dumped', nodeName: 'node-7' });
    const dry = await core.createNamespacedPod({ namespace: NS, body: restorePod('cart-dry'), dryRun: 'All' });
    expect(dry.spec!.containers[0]!.command).toContain('restore');
    expect((await getCk()).status?.restoredPod).toBeUndefined();
    const r = await kubectl(['get', 'pod', 'cart-dry', '-n', NS], { kubeconfig: api.kubeconfigPath });
    expect(r.stderr).toContain('NotFound');
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
    const argv = c.command!.slice(c.command!.indexOf('restore'));
    expect(argv.slice(0, 5)).toEqual(['restore', '--image', '/lockmig/images/cart', '--timeout', '30']);
    expect(argv.slice(argv.indexOf('--'))).toEqual(['--', '/cart', '--db', '/var/lib/cart/cart.db']);
    expect(argv[argv.indexOf('--state-file') + 1]).toBe('/lockmig/state/cart.json');
    // every path the application may lock is allowed, and only those: the data volume, not the
    // token volume the real server's ServiceAccount admission mounted before the webhook ran
    const allowed = argv.flatMap((a, i) => (argv[i - 1] === '--allow' && i < argv.indexOf('--') ? [a] : []));
    expect(allowed).toEqual(['/var/lib/cart']);
    expect(c.args ?? []).toEqual([]);
    expect(c.env).toContainEqual({ name: ENV_RESTORE_FROM, value: `${NS}/cart-move` });
    expect(pod.spec!.affinity!.nodeAffinity!.requiredDuringSchedulingIgnoredDuringExecution!.nodeSelectorTerms[0]!.matchFields)
      .toEqual([{ key: 'metadata.name', operator: 'In', values: ['node-7'] }]);
    // the stored pod is what the API server validated after the patch: volumes the patch added are there
    const stored = await core.readNamespacedPod({ name: pod.metadata!.name!, namespace: NS });
    expect(stored.spec!.volumes!.map((v) => v.name)).toEqual(expect.arrayContaining(pod.spec!.volumes!.map((v) => v.name)));
    expect((await getCk()).status!.restoredPod!.name).toBe(pod.metadata!.name);
  });

  it('a claim lapses when its restore pod is deleted before holding the locks: the next pod is admitted and replaces the claim whole', async () => {
    const claimed = (await getCk()).status!.restoredPod!.name;
    const held = await core.readNamespacedPod({ name: claimed, namespace: NS });
    // what the controller and the restore pod's agent write while it starts
    await setStatus({ phase: 'Restoring', restoredPod: { uid: held.metadata!.uid }, restore: { podName: claimed, podUID: held.metadata!.uid, nodeName: 'node-7', state: 'Failed', reason: 'RestoreFailed', message: 'exit 3' } });
    // while it exists, another pod is still refused
    const denied = await core.createNamespacedPod({ namespace: NS, body: restorePod('cart-c') }).then(() => undefined, (e: unknown) => e as { code?: number; body?: string });
    expect(denied?.code).toBe(403);
    expect((JSON.parse(String(denied?.body)) as { message: string }).message).toContain(`already restored by pod "${claimed}"`);
    await core.deleteNamespacedPod({ name: claimed, namespace: NS, gracePeriodSeconds: 0 });
    const next = await core.createNamespacedPod({ namespace: NS, body: restorePod('cart-c') });
    expect(next.spec!.containers[0]!.command).toContain('restore');
    const st = (await getCk()).status as { restoredPod?: Record<string, unknown>; restore?: unknown };
    expect(st.restoredPod).toMatchObject({ name: 'cart-c', nodeName: 'node-7' });
    expect(st.restoredPod!.uid).toBeUndefined(); // the old pod's UID is not carried over
    expect(st.restore).toBeUndefined(); // nor its restore report
  });

  it('fails closed when the webhook is down', async () => {
    await hook.close();
    const err = await core.createNamespacedPod({ namespace: NS, body: restorePod('cart-z') }).then(() => undefined, (e: unknown) => e as { code?: number; body?: string });
    expect(err?.code).toBe(500);
    expect((JSON.parse(String(err?.body)) as { message: string }).message).toMatch(/failed calling webhook "restore\.lockmig\.dev": .*connection refused/);
  });
});
