/**
 * The real controller (informers, work queue, writer, events, metrics, health) with the real
 * @kubernetes/client-node against a real kube-apiserver (test/support/envtest), acting with exactly
 * the chart's controller RBAC (its ServiceAccount token) and reaching the server through the fault
 * proxy. The agent is simulated by status writes exactly as docs/api.md specifies (status.agent
 * merge patches), so this checks the controller's half of the protocol. The watch cache is off so
 * that an etcd compaction reaches the controller as a real 410 Gone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiextensionsV1Api, CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { startController, type RunningController } from '../../src/controller/main.js';
import { FINALIZER_IMAGES, GROUP, LABEL_NODE, PLURAL, VERSION } from '../../src/api/lockcheckpoint.js';
import { silentLogger } from '../../src/log/logger.js';
import { missing } from '../helpers/env.js';
import type { RunningServer } from '../../src/kube/server.js';
import {
  chartIdentity, createTestNamespace, installCrd, kubectl, startApiServer, startFaultProxy, type FaultProxy, type KubeApiServer,
} from '../support/envtest/index.js';

const skip = missing({ k8s: true }, 'controller against a real API server');
let NS = '';
let OTHER = '';
const CK = () => ({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS });
type Obj = { metadata: { name: string; uid: string; labels?: Record<string, string>; finalizers?: string[]; deletionTimestamp?: string; resourceVersion: string }; spec: Record<string, unknown>; status?: Record<string, any> };

let api: KubeApiServer;
let proxy: FaultProxy;
let ctl: RunningController;
let servers: { metrics?: RunningServer; health?: RunningServer } = {};
const ac = new AbortController();
let custom: CustomObjectsApi;
let core: CoreV1Api;

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const getCk = async (name: string) => (await custom.getNamespacedCustomObject({ ...CK(), name })) as Obj;
const tryGetCk = async (name: string) => {
  try {
    return await getCk(name);
  } catch (err) {
    if ((err as { code?: number }).code === 404) return undefined;
    throw err;
  }
};
const createCk = (name: string, spec: Record<string, unknown>) => custom.createNamespacedCustomObject({ ...CK(), body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name }, spec } });

/** A pod bound to `node` (no kubelet runs it) with the status a kubelet would write. */
async function makePod(name: string, node: string | undefined, phase = 'Running'): Promise<V1Pod> {
  const p = await core.createNamespacedPod({ namespace: NS, body: { metadata: { name }, spec: { ...(node ? { nodeName: node } : {}), containers: [{ name: 'db', image: 'busybox' }] } } });
  return setPhase(p, phase);
}
const setPhase = (p: V1Pod, phase: string) => core.replaceNamespacedPodStatus({ name: p.metadata!.name!, namespace: NS, body: { ...p, status: { phase } } });

/** What the agent does (docs/api.md, Agent protocol). */
async function agentReport(name: string, agent: Record<string, unknown>) {
  await custom.patchNamespacedCustomObjectStatus({ ...CK(), name, body: { status: { agent } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
}

async function eventsFor(name: string) {
  const l = await core.listNamespacedEvent({ namespace: NS });
  return l.items.filter((e) => e.involvedObject.name === name);
}

async function http(port: number, p: string) {
  const r = await fetch(`http://127.0.0.1:${port}${p}`);
  return { status: r.status, body: await r.text() };
}

beforeAll(async () => {
  if (skip) return;
  api = await startApiServer({ watchCache: false });
  await installCrd(api);
  custom = api.kubeConfig.makeApiClient(CustomObjectsApi);
  core = api.kubeConfig.makeApiClient(CoreV1Api);
  NS = (await createTestNamespace(api.kubeConfig, { prefix: 'ctl' })).name;
  OTHER = (await createTestNamespace(api.kubeConfig, { prefix: 'other' })).name;
  // the controller runs as the chart's ServiceAccount (release installed into OTHER), through the proxy
  const id = await chartIdentity(api, 'controller', OTHER, { values: { controller: { leaderElect: false } } });
  proxy = await startFaultProxy(api, { token: id.kubeConfig.getCurrentUser()!.token!, user: 'lockmig-controller' });
  ctl = await startController({
    kubeConfig: proxy.kubeConfig, logger: silentLogger(), metricsAddr: '127.0.0.1:0', healthAddr: '127.0.0.1:0', registry: new Registry(),
    config: { agentAcceptTimeoutMs: 1500, podWaitTimeoutMs: 30_000, pollIntervalMs: 300, imageDeletionTimeoutMs: 30_000 },
    onListening: (s) => { servers = s; },
  }, ac.signal);
}, 120_000);

afterAll(async () => {
  ac.abort();
  await ctl?.done;
  await proxy?.close();
  await api?.stop();
});

describe.skipIf(skip)('controller against the API server', () => {
  it('the CRD is accepted by the server: structural, Established, its CEL rules compiled (else the create is refused)', async () => {
    const crd = await api.kubeConfig.makeApiClient(ApiextensionsV1Api).readCustomResourceDefinition({ name: `${PLURAL}.${GROUP}` });
    const conds = Object.fromEntries((crd.status?.conditions ?? []).map((c) => [c.type, c.status]));
    expect(conds).toMatchObject({ Established: 'True', NamesAccepted: 'True' });
    expect(conds.NonStructuralSchema).toBeUndefined();
    // the stored CRD kept both CEL rules (client-node spells the field x_kubernetes_validations)
    const schema = JSON.stringify(crd.spec.versions[0]!.schema);
    expect(schema).toContain('[has(self.api), has(self.nodeLocal), has(self.persistentVolumeClaim)].filter(x, x).size() == 1');
    expect(schema).toContain('self == oldSelf');
  });

  it('rejects invalid objects at admission with the CRD messages (union, immutability)', async () => {
    await expect(custom.createNamespacedCustomObject({ ...CK(), body: {
      apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'both' },
      spec: { sourcePodName: 'x', storage: { nodeLocal: {}, persistentVolumeClaim: { claimName: 'c' } } },
    } })).rejects.toMatchObject({ code: 422, body: expect.stringContaining('exactly one of storage.api, storage.nodeLocal or storage.persistentVolumeClaim must be set') });
    await custom.createNamespacedCustomObject({ ...CK(), body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'immut' }, spec: { sourcePodName: 'nope' } } });
    await expect(custom.patchNamespacedCustomObject({ ...CK(), name: 'immut', body: { spec: { sourcePodName: 'other' } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)))
      .rejects.toMatchObject({ code: 422, body: expect.stringContaining('spec is immutable') });
  });

  it('dispatches, takes the agent report to Dumped, records events and metrics, then runs the finalizer protocol on delete', async () => {
    const pod = await makePod('db-0', 'node-a');
    await custom.createNamespacedCustomObject({ ...CK(), body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'move-db' }, spec: { sourcePodName: 'db-0' } } });

    const d = await waitFor('dispatch', async () => {
      const o = await getCk('move-db');
      return o.status?.phase === 'Dumping' && o.metadata.labels?.[LABEL_NODE] ? o : undefined;
    });
    expect(d.metadata.labels?.[LABEL_NODE]).toBe('node-a');
    expect(d.metadata.finalizers).toContain(FINALIZER_IMAGES);
    expect(d.status).toMatchObject({ nodeName: 'node-a', sourcePodUID: pod.metadata!.uid, observedGeneration: 1 });
    expect(d.status?.conditions).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'Dispatched', status: 'True' }), expect.objectContaining({ type: 'Ready', status: 'False', reason: 'Dumping' })]));
    // the CRD defaults were applied by the server
    expect(d.spec).toMatchObject({ lockKinds: ['POSIX', 'FLOCK', 'OFD', 'LEASE'], storage: { api: { fallback: 'NodeLocal' } }, restore: { mode: 'Auto', timeoutSeconds: 30, holdSeconds: 300 }, target: { policy: 'Annotated' } });

    // the agent on node-a: the label selector it uses finds the object
    const mine = (await custom.listNamespacedCustomObject({ ...CK(), labelSelector: `${LABEL_NODE}=node-a` })) as { items: Obj[] };
    expect(mine.items.map((o) => o.metadata.name)).toContain('move-db');
    const t = new Date().toISOString();
    await agentReport('move-db', { nodeName: 'node-a', podUID: pod.metadata!.uid, state: 'Dumping', startTime: t, heartbeatTime: t });
    await agentReport('move-db', {
      state: 'Dumped', completionTime: new Date().toISOString(), dumpMilliseconds: 42, imageLocation: `/var/lib/lockmig/checkpoints/${NS}/move-db`,
      locks: { posix: 2, flock: 1, ofd: 3, lease: 0, total: 6 }, files: 4, skippedFds: 0,
    });
    const done = await waitFor('Dumped', async () => {
      const o = await getCk('move-db');
      return o.status?.phase === 'Dumped' ? o : undefined;
    });
    expect(done.status).toMatchObject({ locks: { total: 6, ofd: 3 }, files: 4, imageLocation: `/var/lib/lockmig/checkpoints/${NS}/move-db`, durations: { dumpMilliseconds: 42 } });
    expect(done.status?.conditions).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'Ready', status: 'True', reason: 'Dumped', observedGeneration: 1 })]));

    const evs = await waitFor('events', async () => {
      const e = await eventsFor('move-db');
      return e.some((x) => x.reason === 'Dumped') ? e : undefined;
    });
    expect(evs.map((e) => e.reason)).toEqual(expect.arrayContaining(['Dispatched', 'Dumped']));
    expect(evs[0]?.involvedObject).toMatchObject({ kind: 'LockCheckpoint', apiVersion: `${GROUP}/${VERSION}`, uid: done.metadata.uid });

    const m = await http(servers.metrics!.port, '/metrics');
    expect(m.body).toMatch(/lockmig_controller_locks_moved_total\{kind="OFD"\} 3/);
    expect(m.body).toMatch(/lockmig_controller_reconciles_total\{result="ok"\} [1-9]/);
    expect(m.body).toMatch(/lockmig_controller_reconcile_duration_seconds_bucket/);
    expect((await http(servers.health!.port, '/readyz')).status).toBe(200);
    expect((await http(servers.health!.port, '/healthz')).body).toContain('ok');

    // no hot loop: a settled object is not rewritten
    const rv = done.metadata.resourceVersion;
    await new Promise((r) => setTimeout(r, 700));
    expect((await getCk('move-db')).metadata.resourceVersion).toBe(rv);

    // delete: the finalizer holds the object until the agent confirms the images are gone
    await custom.deleteNamespacedCustomObject({ ...CK(), name: 'move-db' });
    const deleting = await getCk('move-db');
    expect(deleting.metadata.deletionTimestamp).toBeTruthy();
    await new Promise((r) => setTimeout(r, 400));
    expect(await tryGetCk('move-db')).toBeDefined();
    await agentReport('move-db', { imagesDeleted: true });
    await waitFor('object gone', async () => ((await tryGetCk('move-db')) === undefined ? true : undefined));
    // the Event is written asynchronously (the recorder never blocks a reconcile)
    await waitFor('ImagesDeleted event', async () => ((await eventsFor('move-db')).some((e) => e.reason === 'ImagesDeleted') ? true : undefined));
  });

  it('an agent that never answers: Failed/AgentUnavailable with a Warning event', async () => {
    await makePod('lonely', 'node-z');
    await custom.createNamespacedCustomObject({ ...CK(), body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'no-agent' }, spec: { sourcePodName: 'lonely' } } });
    const o = await waitFor('AgentUnavailable', async () => {
      const x = await getCk('no-agent');
      return x.status?.phase === 'Failed' ? x : undefined;
    });
    expect(o.status?.conditions).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'Ready', reason: 'AgentUnavailable' })]));
    expect(o.status?.message).toMatch(/node-z did not answer/);
    const evs = await waitFor('warning event', async () => (await eventsFor('no-agent')).find((e) => e.reason === 'AgentUnavailable'));
    expect(evs.type).toBe('Warning');
  });

  it('a pod that appears later: SourcePodNotFound first, dispatched as soon as it runs (pod informer triggers the reconcile)', async () => {
    await custom.createNamespacedCustomObject({ ...CK(), body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'early' }, spec: { sourcePodName: 'late-pod' } } });
    await waitFor('SourcePodNotFound', async () => ((await getCk('early')).status?.conditions ?? []).find((c: { reason: string }) => c.reason === 'SourcePodNotFound'));
    expect((await getCk('early')).status?.phase).toBe('Pending');
    await makePod('late-pod', 'node-b', 'Pending');
    await waitFor('PodNotRunning', async () => ((await getCk('early')).status?.conditions ?? []).find((c: { reason: string }) => c.reason === 'PodNotRunning'));
    await setPhase(await core.readNamespacedPod({ name: 'late-pod', namespace: NS }), 'Running');
    const o = await waitFor('dispatch', async () => {
      const x = await getCk('early');
      return x.status?.phase === 'Dumping' || x.status?.phase === 'Failed' ? x : undefined;
    });
    expect(o.status?.nodeName).toBe('node-b');
  });

  it('a source pod replaced under the same name mid-dump: Failed/SourcePodReplaced', async () => {
    await makePod('flaky', 'node-a');
    await custom.createNamespacedCustomObject({ ...CK(), body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'replaced' }, spec: { sourcePodName: 'flaky' } } });
    await waitFor('dispatch', async () => ((await getCk('replaced')).status?.phase === 'Dumping' ? true : undefined));
    await agentReport('replaced', { nodeName: 'node-a', state: 'Dumping', startTime: new Date().toISOString(), heartbeatTime: new Date().toISOString() });
    // what the kubelet does once the containers are gone: the final, immediate delete
    await core.deleteNamespacedPod({ name: 'flaky', namespace: NS, gracePeriodSeconds: 0 });
    await makePod('flaky', 'node-a');
    const o = await waitFor('SourcePodReplaced', async () => {
      const x = await getCk('replaced');
      return x.status?.phase === 'Failed' ? x : undefined;
    });
    expect(o.status?.conditions).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'Ready', reason: 'SourcePodReplaced' })]));
  });

  it('keeps working after the API server compacts its history (real watch 410) and after a watch failure (informer restart + relist)', async () => {
    const ckCollection = /\/lockcheckpoints$/;
    const seen410 = () => proxy.requests.filter((r) => r.watch && ckCollection.test(r.path)).flatMap((r) => r.watchErrors).includes(410);
    expect(seen410()).toBe(false);
    await waitFor('the controller\'s watches', () => (proxy.activeWatches() >= 2 ? true : undefined));
    // writes elsewhere move the revision on; compaction removes the history the watches would resume from
    for (let i = 0; i < 2; i++) await core.createNamespacedConfigMap({ namespace: OTHER, body: { metadata: { name: `bump-${i}` } } });
    await api.compact();
    proxy.cutWatches();
    await waitFor('a real 410 Gone on the LockCheckpoint watch', () => (seen410() ? true : undefined));
    await makePod('after-410', 'node-a');
    await createCk('after-410', { sourcePodName: 'after-410' });
    await waitFor('dispatch after 410', async () => ((await getCk('after-410')).status?.phase === 'Dumping' ? true : undefined));

    // A 500 on the watch makes client-node's ListWatch stop for good; ours restarts with a relist.
    proxy.fail({ path: ckCollection, watch: true, status: 500, times: 1 });
    proxy.fail({ path: ckCollection, watch: false, method: 'GET', status: 503, times: 1 });
    proxy.cutWatches();
    await waitFor('informer restart', async () => {
      const m = await http(servers.metrics!.port, '/metrics');
      return /lockmig_controller_informer_restarts_total\{informer="lockcheckpoints"\} [1-9]/.test(m.body) ? true : undefined;
    });
    await makePod('after-500', 'node-a');
    await createCk('after-500', { sourcePodName: 'after-500' });
    await waitFor('dispatch after restart', async () => ((await getCk('after-500')).status?.phase === 'Dumping' ? true : undefined));
    expect(proxy.requests.filter((r) => r.injected).map((r) => r.status)).toEqual([500, 503]);
  });

  it('restoredPod written by the webhook makes a Dumped checkpoint Restoring; the restore pod\'s report of its locks held makes it Restored, with events', async () => {
    const pod = await makePod('rp-src', 'node-a');
    await custom.createNamespacedCustomObject({ ...CK(), body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'rp' }, spec: { sourcePodName: 'rp-src' } } });
    await waitFor('dispatch', async () => ((await getCk('rp')).status?.phase === 'Dumping' ? true : undefined));
    await agentReport('rp', { nodeName: 'node-a', podUID: pod.metadata!.uid, state: 'Dumped', completionTime: new Date().toISOString(), locks: { flock: 1, total: 1 } });
    await waitFor('Dumped', async () => ((await getCk('rp')).status?.phase === 'Dumped' ? true : undefined));
    // what the webhook does when it admits the restore pod
    await custom.patchNamespacedCustomObjectStatus({ ...CK(), name: 'rp', body: { status: { restoredPod: { name: 'rp-new', nodeName: 'node-c', time: new Date().toISOString() } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    const restoring = await waitFor('Restoring', async () => {
      const x = await getCk('rp');
      return x.status?.phase === 'Restoring' ? x : undefined;
    });
    expect(restoring.status?.conditions).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'LocksHeld', status: 'False', reason: 'Restoring', message: expect.stringContaining('rp-new') })]));
    // what the agent on the restore pod's node writes once the pod's shim holds the locks
    await custom.patchNamespacedCustomObjectStatus({ ...CK(), name: 'rp', body: { status: { restore: {
      podName: 'rp-new', nodeName: 'node-c', state: 'Held', heldTime: new Date().toISOString(), locks: { posix: 0, flock: 1, ofd: 0, lease: 0, total: 1 },
      handedOver: 0, notRestored: 0, windowMilliseconds: 12, message: '1 lock(s) held by pod rp-new (0 handed over …; longest window 12 ms)',
    } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    const o = await waitFor('Restored', async () => {
      const x = await getCk('rp');
      return x.status?.phase === 'Restored' ? x : undefined;
    });
    expect(o.status?.conditions).toEqual(expect.arrayContaining([
      expect.objectContaining({ type: 'Ready', status: 'True', reason: 'Restored', message: expect.stringContaining('rp-new') }),
      expect.objectContaining({ type: 'LocksHeld', status: 'True', reason: 'LocksHeld', message: expect.stringContaining('window 12 ms') }),
    ]));
    await waitFor('Restored event', async () => (await eventsFor('rp')).find((e) => e.reason === 'Restored'));
  });

  it('TTL: a finished checkpoint is deleted ttlSecondsAfterFinished later (the finalizer flow still runs)', async () => {
    const pod = await makePod('ttl-pod', 'node-a');
    await custom.createNamespacedCustomObject({ ...CK(), body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'ttl' }, spec: { sourcePodName: 'ttl-pod', ttlSecondsAfterFinished: 1 } } });
    await waitFor('dispatch', async () => ((await getCk('ttl')).status?.phase === 'Dumping' ? true : undefined));
    await agentReport('ttl', { nodeName: 'node-a', podUID: pod.metadata!.uid, state: 'Dumped', completionTime: new Date().toISOString(), locks: { posix: 1, total: 1 } });
    await waitFor('deletion requested', async () => ((await getCk('ttl')).metadata.deletionTimestamp ? true : undefined), 5000);
    await agentReport('ttl', { imagesDeleted: true });
    await waitFor('gone', async () => ((await tryGetCk('ttl')) === undefined ? true : undefined));
    const reasons = await waitFor('the TTL events', async () => {
      const r = (await eventsFor('ttl')).map((e) => e.reason);
      return ['Dumped', 'Expired', 'ImagesDeleted'].every((x) => r.includes(x)) ? r : undefined;
    });
    expect(reasons).toEqual(expect.arrayContaining(['Dumped', 'Expired', 'ImagesDeleted']));
  });
});

describe.skipIf(skip)('kubectl (client-go, written by nobody here) sees what users see', () => {
  const kc = (args: string[], input?: string) => kubectl(['-n', NS, ...args], { kubeconfig: api.kubeconfigPath, input })
    .then((r) => ({ code: r.code, out: r.stdout, err: r.stderr }));

  it('kubectl apply + get lckpt: the short name works and the printer columns show Phase, Source, Node, Target, Locks, Age', async () => {
    const pod = await makePod('kc-pod', 'node-k');
    const yaml = `apiVersion: lockmig.dev/v1alpha1\nkind: LockCheckpoint\nmetadata:\n  name: kc\nspec:\n  sourcePodName: kc-pod\n  lockKinds: [POSIX, OFD]\n`;
    expect(await kc(['apply', '-f', '-'], yaml)).toMatchObject({ code: 0, out: 'lockcheckpoint.lockmig.dev/kc created\n' });
    await waitFor('dispatch', async () => ((await getCk('kc')).status?.phase === 'Dumping' ? true : undefined));
    await agentReport('kc', { nodeName: 'node-k', podUID: pod.metadata!.uid, state: 'Dumped', completionTime: new Date().toISOString(), locks: { posix: 5, ofd: 2, total: 7 }, files: 2 });
    await waitFor('Dumped', async () => ((await getCk('kc')).status?.phase === 'Dumped' ? true : undefined));
    const r = await kc(['get', 'lckpt', 'kc']);
    expect(r.code, r.err).toBe(0);
    const [head, row] = r.out.trim().split('\n').map((l) => l.trim().split(/\s{2,}/));
    expect(head).toEqual(['NAME', 'PHASE', 'SOURCE', 'NODE', 'TARGET', 'LOCKS', 'AGE']);
    // no target yet: kubectl leaves the TARGET cell empty, so the row has one cell fewer
    expect(row?.slice(0, 5)).toEqual(['kc', 'Dumped', 'kc-pod', 'node-k', '7']);
    const wide = await kc(['get', 'lockcheckpoints', 'kc', '-o', 'wide']);
    expect(wide.out).toMatch(/REASON/);
    expect(wide.out).toMatch(/\bDumped\s+\S+\s*$/m);
    // editing the spec is refused with the CRD's message
    const edit = await kc(['patch', 'lckpt', 'kc', '--type=merge', '-p', '{"spec":{"sourcePodName":"other"}}']);
    expect(edit.code).not.toBe(0);
    expect(edit.err).toContain('spec is immutable; delete the LockCheckpoint and create a new one to change it');
  });
});
