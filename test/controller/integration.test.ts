/**
 * The real controller (informers, work queue, writer, events, metrics, health) with the real
 * @kubernetes/client-node against the in-memory API server that speaks the Kubernetes REST API.
 * The agent is simulated by status writes exactly as docs/api.md specifies (status.agent merge
 * patches), so this checks the controller's half of the protocol.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';
import { spawn } from 'node:child_process';
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { startFakeApiServer, type FakeApiServer } from '../support/apiserver/index.js';
import { startController, type RunningController } from '../../src/controller/main.js';
import { FINALIZER_IMAGES, GROUP, LABEL_NODE, PLURAL, VERSION } from '../../src/api/lockcheckpoint.js';
import { silentLogger } from '../../src/log/logger.js';
import { REPO_ROOT, missing } from '../helpers/env.js';
import type { RunningServer } from '../../src/kube/server.js';

const NS = 'ctl';
const CK = { group: GROUP, version: VERSION, plural: PLURAL, namespace: NS };
type Obj = { metadata: { name: string; uid: string; labels?: Record<string, string>; finalizers?: string[]; deletionTimestamp?: string; resourceVersion: string }; spec: Record<string, unknown>; status?: Record<string, any> };

let srv: FakeApiServer;
let ctl: RunningController;
let servers: { metrics?: RunningServer; health?: RunningServer } = {};
const ac = new AbortController();
let custom: CustomObjectsApi;
let core: CoreV1Api;

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
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

const getCk = async (name: string) => (await custom.getNamespacedCustomObject({ ...CK, name })) as Obj;
const tryGetCk = async (name: string) => {
  try {
    return await getCk(name);
  } catch (err) {
    if ((err as { code?: number }).code === 404) return undefined;
    throw err;
  }
};

async function makePod(name: string, node: string | undefined, phase = 'Running') {
  const p = await srv.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS }, spec: { ...(node ? { nodeName: node } : {}), containers: [{ name: 'db', image: 'busybox' }] } });
  return srv.updateStatus({ ...p, status: { phase } });
}

/** What the agent does (docs/api.md, Agent protocol). */
async function agentReport(name: string, agent: Record<string, unknown>) {
  await custom.patchNamespacedCustomObjectStatus({ ...CK, name, body: { status: { agent } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
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
  srv = await startFakeApiServer({ crds: [path.join(REPO_ROOT, 'crds/lockmig.dev_lockcheckpoints.yaml')], bookmarkIntervalMs: 200 });
  custom = srv.kubeConfig.makeApiClient(CustomObjectsApi);
  core = srv.kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: NS } } });
  ctl = await startController({
    kubeConfig: srv.kubeConfig, logger: silentLogger(), metricsAddr: '127.0.0.1:0', healthAddr: '127.0.0.1:0', registry: new Registry(),
    config: { agentAcceptTimeoutMs: 1500, podWaitTimeoutMs: 30_000, pollIntervalMs: 300, imageDeletionTimeoutMs: 30_000 },
    onListening: (s) => { servers = s; },
  }, ac.signal);
});

afterAll(async () => {
  ac.abort();
  await ctl?.done;
  await srv?.close();
});

describe('controller against the API server', () => {
  it('the CRD is accepted by the server and its CEL rules compile there', () => {
    expect(srv.celWarnings).toEqual([]);
  });

  it('rejects invalid objects at admission with the CRD messages (union, immutability)', async () => {
    await expect(custom.createNamespacedCustomObject({ ...CK, body: {
      apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'both' },
      spec: { sourcePodName: 'x', storage: { nodeLocal: {}, persistentVolumeClaim: { claimName: 'c' } } },
    } })).rejects.toMatchObject({ code: 422, body: expect.stringContaining('exactly one of storage.nodeLocal or storage.persistentVolumeClaim must be set') });
    await custom.createNamespacedCustomObject({ ...CK, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'immut' }, spec: { sourcePodName: 'nope' } } });
    await expect(custom.patchNamespacedCustomObject({ ...CK, name: 'immut', body: { spec: { sourcePodName: 'other' } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)))
      .rejects.toMatchObject({ code: 422, body: expect.stringContaining('spec is immutable') });
  });

  it('dispatches, takes the agent report to Dumped, records events and metrics, then runs the finalizer protocol on delete', async () => {
    const pod = await makePod('db-0', 'node-a');
    await custom.createNamespacedCustomObject({ ...CK, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'move-db' }, spec: { sourcePodName: 'db-0' } } });

    const d = await waitFor('dispatch', async () => {
      const o = await getCk('move-db');
      return o.status?.phase === 'Dumping' && o.metadata.labels?.[LABEL_NODE] ? o : undefined;
    });
    expect(d.metadata.labels?.[LABEL_NODE]).toBe('node-a');
    expect(d.metadata.finalizers).toContain(FINALIZER_IMAGES);
    expect(d.status).toMatchObject({ nodeName: 'node-a', sourcePodUID: pod.metadata.uid, observedGeneration: 1 });
    expect(d.status?.conditions).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'Dispatched', status: 'True' }), expect.objectContaining({ type: 'Ready', status: 'False', reason: 'Dumping' })]));
    // the CRD defaults were applied by the server
    expect(d.spec).toMatchObject({ lockKinds: ['POSIX', 'FLOCK', 'OFD', 'LEASE'], storage: { nodeLocal: {} }, restore: { mode: 'Auto' } });

    // the agent on node-a: the label selector it uses finds the object
    const mine = (await custom.listNamespacedCustomObject({ ...CK, labelSelector: `${LABEL_NODE}=node-a` })) as { items: Obj[] };
    expect(mine.items.map((o) => o.metadata.name)).toContain('move-db');
    const t = new Date().toISOString();
    await agentReport('move-db', { nodeName: 'node-a', podUID: pod.metadata.uid, state: 'Dumping', startTime: t, heartbeatTime: t });
    await agentReport('move-db', {
      state: 'Dumped', completionTime: new Date().toISOString(), dumpMilliseconds: 42, imageLocation: '/var/lib/lockmig/checkpoints/ctl/move-db',
      locks: { posix: 2, flock: 1, ofd: 3, lease: 0, total: 6 }, files: 4, skippedFds: 0,
    });
    const done = await waitFor('Dumped', async () => {
      const o = await getCk('move-db');
      return o.status?.phase === 'Dumped' ? o : undefined;
    });
    expect(done.status).toMatchObject({ locks: { total: 6, ofd: 3 }, files: 4, imageLocation: '/var/lib/lockmig/checkpoints/ctl/move-db', durations: { dumpMilliseconds: 42 } });
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
    await custom.deleteNamespacedCustomObject({ ...CK, name: 'move-db' });
    const deleting = await getCk('move-db');
    expect(deleting.metadata.deletionTimestamp).toBeTruthy();
    await new Promise((r) => setTimeout(r, 400));
    expect(await tryGetCk('move-db')).toBeDefined();
    await agentReport('move-db', { imagesDeleted: true });
    await waitFor('object gone', async () => ((await tryGetCk('move-db')) === undefined ? true : undefined));
    expect((await eventsFor('move-db')).map((e) => e.reason)).toContain('ImagesDeleted');
  });

  it('an agent that never answers: Failed/AgentUnavailable with a Warning event', async () => {
    await makePod('lonely', 'node-z');
    await custom.createNamespacedCustomObject({ ...CK, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'no-agent' }, spec: { sourcePodName: 'lonely' } } });
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
    await custom.createNamespacedCustomObject({ ...CK, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'early' }, spec: { sourcePodName: 'late-pod' } } });
    await waitFor('SourcePodNotFound', async () => ((await getCk('early')).status?.conditions ?? []).find((c: { reason: string }) => c.reason === 'SourcePodNotFound'));
    expect((await getCk('early')).status?.phase).toBe('Pending');
    await makePod('late-pod', 'node-b', 'Pending');
    await waitFor('PodNotRunning', async () => ((await getCk('early')).status?.conditions ?? []).find((c: { reason: string }) => c.reason === 'PodNotRunning'));
    const p = srv.get('v1', 'Pod', 'late-pod', NS)!;
    await srv.updateStatus({ ...p, status: { phase: 'Running' } });
    const o = await waitFor('dispatch', async () => {
      const x = await getCk('early');
      return x.status?.phase === 'Dumping' || x.status?.phase === 'Failed' ? x : undefined;
    });
    expect(o.status?.nodeName).toBe('node-b');
  });

  it('a source pod replaced under the same name mid-dump: Failed/SourcePodReplaced', async () => {
    await makePod('flaky', 'node-a');
    await custom.createNamespacedCustomObject({ ...CK, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'replaced' }, spec: { sourcePodName: 'flaky' } } });
    await waitFor('dispatch', async () => ((await getCk('replaced')).status?.phase === 'Dumping' ? true : undefined));
    await agentReport('replaced', { nodeName: 'node-a', state: 'Dumping', startTime: new Date().toISOString(), heartbeatTime: new Date().toISOString() });
    await srv.delete('v1', 'Pod', 'flaky', NS);
    await makePod('flaky', 'node-a');
    const o = await waitFor('SourcePodReplaced', async () => {
      const x = await getCk('replaced');
      return x.status?.phase === 'Failed' ? x : undefined;
    });
    expect(o.status?.conditions).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'Ready', reason: 'SourcePodReplaced' })]));
  });

  it('keeps working after the API server compacts its history (watch 410) and after a watch failure (informer restart + relist)', async () => {
    srv.compact();
    await makePod('after-410', 'node-a');
    await custom.createNamespacedCustomObject({ ...CK, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'after-410' }, spec: { sourcePodName: 'after-410' } } });
    await waitFor('dispatch after 410', async () => ((await getCk('after-410')).status?.phase === 'Dumping' ? true : undefined));

    // A 500 on the watch makes client-node's ListWatch stop for good; ours restarts with a relist.
    srv.injectFailure({ path: `/apis/${GROUP}/${VERSION}/${PLURAL}`, watch: true, code: 500, times: 1 });
    srv.injectFailure({ path: `/apis/${GROUP}/${VERSION}/${PLURAL}`, watch: false, method: 'GET', code: 503, times: 1 });
    srv.dropWatches();
    await waitFor('informer restart', async () => {
      const m = await http(servers.metrics!.port, '/metrics');
      return /lockmig_controller_informer_restarts_total\{informer="lockcheckpoints"\} [1-9]/.test(m.body) ? true : undefined;
    });
    await makePod('after-500', 'node-a');
    await custom.createNamespacedCustomObject({ ...CK, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'after-500' }, spec: { sourcePodName: 'after-500' } } });
    await waitFor('dispatch after restart', async () => ((await getCk('after-500')).status?.phase === 'Dumping' ? true : undefined));
  });

  it('restoredPod written by the webhook makes a Dumped checkpoint Restoring; the restore pod\'s report of its locks held makes it Restored, with events', async () => {
    const pod = await makePod('rp-src', 'node-a');
    await custom.createNamespacedCustomObject({ ...CK, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'rp' }, spec: { sourcePodName: 'rp-src' } } });
    await waitFor('dispatch', async () => ((await getCk('rp')).status?.phase === 'Dumping' ? true : undefined));
    await agentReport('rp', { nodeName: 'node-a', podUID: pod.metadata.uid, state: 'Dumped', completionTime: new Date().toISOString(), locks: { flock: 1, total: 1 } });
    await waitFor('Dumped', async () => ((await getCk('rp')).status?.phase === 'Dumped' ? true : undefined));
    // what the webhook does when it admits the restore pod
    await custom.patchNamespacedCustomObjectStatus({ ...CK, name: 'rp', body: { status: { restoredPod: { name: 'rp-new', nodeName: 'node-c', time: new Date().toISOString() } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    const restoring = await waitFor('Restoring', async () => {
      const x = await getCk('rp');
      return x.status?.phase === 'Restoring' ? x : undefined;
    });
    expect(restoring.status?.conditions).toEqual(expect.arrayContaining([expect.objectContaining({ type: 'LocksHeld', status: 'False', reason: 'Restoring', message: expect.stringContaining('rp-new') })]));
    // what the agent on the restore pod's node writes once the pod's shim holds the locks
    await custom.patchNamespacedCustomObjectStatus({ ...CK, name: 'rp', body: { status: { restore: {
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
    await custom.createNamespacedCustomObject({ ...CK, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name: 'ttl' }, spec: { sourcePodName: 'ttl-pod', ttlSecondsAfterFinished: 1 } } });
    await waitFor('dispatch', async () => ((await getCk('ttl')).status?.phase === 'Dumping' ? true : undefined));
    await agentReport('ttl', { nodeName: 'node-a', podUID: pod.metadata.uid, state: 'Dumped', completionTime: new Date().toISOString(), locks: { posix: 1, total: 1 } });
    await waitFor('deletion requested', async () => ((await getCk('ttl')).metadata.deletionTimestamp ? true : undefined), 5000);
    await agentReport('ttl', { imagesDeleted: true });
    await waitFor('gone', async () => ((await tryGetCk('ttl')) === undefined ? true : undefined));
    expect((await eventsFor('ttl')).map((e) => e.reason)).toEqual(expect.arrayContaining(['Dumped', 'Expired', 'ImagesDeleted']));
  });
});

const noKubectl = missing({ tools: ['kubectl'] }, 'controller with kubectl');

describe.skipIf(noKubectl)('kubectl (client-go, written by nobody here) sees what users see', () => {
  const kubectl = (args: string[], input?: string) => new Promise<{ code: number | null; out: string; err: string }>((resolve, reject) => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'kubectl-cache-'));
    const child = spawn('kubectl', ['--kubeconfig', srv.kubeconfigPath, '--cache-dir', cache, '-n', NS, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('error', reject);
    child.on('close', (code) => { fs.rmSync(cache, { recursive: true, force: true }); resolve({ code, out, err }); });
    child.stdin.end(input ?? '');
  });

  it('kubectl apply + get lckpt: the short name works and the printer columns show Phase, Source, Node, Target, Locks, Age', async () => {
    const pod = await makePod('kc-pod', 'node-k');
    const yaml = `apiVersion: lockmig.dev/v1alpha1\nkind: LockCheckpoint\nmetadata:\n  name: kc\nspec:\n  sourcePodName: kc-pod\n  lockKinds: [POSIX, OFD]\n`;
    expect(await kubectl(['apply', '-f', '-'], yaml)).toMatchObject({ code: 0, out: 'lockcheckpoint.lockmig.dev/kc created\n' });
    await waitFor('dispatch', async () => ((await getCk('kc')).status?.phase === 'Dumping' ? true : undefined));
    await agentReport('kc', { nodeName: 'node-k', podUID: pod.metadata.uid, state: 'Dumped', completionTime: new Date().toISOString(), locks: { posix: 5, ofd: 2, total: 7 }, files: 2 });
    await waitFor('Dumped', async () => ((await getCk('kc')).status?.phase === 'Dumped' ? true : undefined));
    const r = await kubectl(['get', 'lckpt', 'kc']);
    expect(r.code, r.err).toBe(0);
    const [head, row] = r.out.trim().split('\n').map((l) => l.trim().split(/\s{2,}/));
    expect(head).toEqual(['NAME', 'PHASE', 'SOURCE', 'NODE', 'TARGET', 'LOCKS', 'AGE']);
    // no target yet: kubectl leaves the TARGET cell empty, so the row has one cell fewer
    expect(row?.slice(0, 5)).toEqual(['kc', 'Dumped', 'kc-pod', 'node-k', '7']);
    const wide = await kubectl(['get', 'lockcheckpoints', 'kc', '-o', 'wide']);
    expect(wide.out).toMatch(/REASON/);
    expect(wide.out).toMatch(/\bDumped\s+\S+\s*$/m);
    // editing the spec is refused with the CRD's message
    const edit = await kubectl(['patch', 'lckpt', 'kc', '--type=merge', '-p', '{"spec":{"sourcePodName":"other"}}']);
    expect(edit.code).not.toBe(0);
    expect(edit.err).toContain('spec is immutable; delete the LockCheckpoint and create a new one to change it');
  });
});
