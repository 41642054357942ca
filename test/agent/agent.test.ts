/**
 * The agent against a real kube-apiserver (test/support/envtest), acting as the
 * chart's agent ServiceAccount (real client-node informer, status patches, Events, all under the
 * chart's RBAC), with a pod whose containers are real processes in kubelet-named cgroups holding
 * real locks. The controller's dispatch is done by hand here (label + status), exactly as
 * docs/api.md specifies; test/e2e runs the real controller.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { FINALIZER_IMAGES, LABEL_NODE } from '../../src/api/index.js';
import { Agent } from '../../src/agent/agent.js';
import { Vault } from '../../src/handover/index.js';
import { dumpProcesses } from '../../src/engine/dump.js';
import { readCheckpoint, writeCheckpoint } from '../../src/image/index.js';
import { silentLogger } from '../../src/log/logger.js';
import { EventRecorder, kubeEventSink } from '../../src/kube/events.js';
import { realClock } from '../../src/kube/clock.js';
import { chartIdentity, type ChartIdentity } from '../support/envtest/index.js';
import { missing } from '../helpers/env.js';
import {
  HOLDER, KubeletCgroups, connectCluster, containerID, createCheckpoint, createRunningPod, patchCheckpoint, setupNamespaceAndNode, suffix, waitForCheckpoint, type Cluster,
} from './support/virtual-pods.js';

const skip = missing({ root: true, tools: ['python3', 'crit'], k8s: true }, 'agent against a real API server');

describe.skipIf(skip)('lockmig agent', () => {
  let cluster: Cluster;
  let env: Awaited<ReturnType<typeof setupNamespaceAndNode>>;
  let cgroups: KubeletCgroups;
  let agent: Agent;
  let vault: Vault;
  let storageRoot: string;
  let dataDir: string;
  let podUID: string;
  let identity: ChartIdentity;
  const ids = { db: containerID(), idle: containerID() };

  beforeAll(async () => {
    cluster = await connectCluster();
    env = await setupNamespaceAndNode(cluster, 'agent');
    cgroups = new KubeletCgroups('agent');
    storageRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-agent-store-'));
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-agent-data-'));
    const pod = await createRunningPod(cluster, {
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name: 'db-0', namespace: env.namespace },
      spec: {
        nodeName: env.node,
        containers: [
          { name: 'db', image: 'example/db', command: ['python3', HOLDER] },
          { name: 'idle', image: 'example/idle', command: ['sleep', '600'] },
        ],
      },
    }, ids);
    podUID = pod.metadata!.uid!;
    // The processes, in the cgroups the kubelet (systemd driver) and containerd would make.
    const dbDir = cgroups.container({ podUID, containerID: ids.db });
    const idleDir = cgroups.container({ podUID, containerID: ids.idle, driver: 'systemd' });
    const pauseDir = cgroups.container({ podUID, containerID: containerID() });
    await cgroups.start(dbDir, ['python3', HOLDER, '--posix', `${dataDir}/posix.lock`, '--flock', `${dataDir}/flock.lock`, '--ofd', `${dataDir}/ofd.lock`, '--sqlite', `${dataDir}/app.db`]);
    await cgroups.start(idleDir, ['sh', '-c', 'echo up; exec sleep 600']);
    await cgroups.start(pauseDir, ['sh', '-c', 'echo pause; exec sleep 600']);

    vault = new Vault({ socketPath: path.join(storageRoot, 'vault.sock'), logger: silentLogger() });
    vault.start();
    // the agent acts as the chart's agent ServiceAccount
    identity = await chartIdentity(cluster, 'agent', env.namespace, { release: `lockmig-e2e-${suffix()}` });
    const events = new EventRecorder({ sink: kubeEventSink(identity.kubeConfig), clock: realClock, logger: silentLogger(), component: 'lockmig-agent', instance: env.node });
    agent = new Agent({
      kc: identity.kubeConfig, node: env.node, storageRoot, procRoot: '/proc', logger: silentLogger(),
      dump: dumpProcesses, write: writeCheckpoint, now: () => new Date(), vault, events,
    });
    await agent.start();
  });

  afterAll(async () => {
    await agent?.stop();
    await vault?.close();
    await cgroups?.cleanup();
    await identity?.cleanup();
    await env?.cleanup();
    await cluster?.close();
    for (const d of [storageRoot, dataDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  async function waitForEvent(_node: string, name: string, reason: string) {
    const end = Date.now() + 10_000;
    for (;;) {
      const evs = (await cluster.core.listNamespacedEvent({ namespace: env.namespace })).items;
      const e = evs.find((x) => x.involvedObject.name === name && x.reason === reason && x.source?.component === 'lockmig-agent');
      if (e) return e;
      if (Date.now() > end) throw new Error(`no ${reason} event from the agent for ${name}; events: ${JSON.stringify(evs.map((x) => [x.involvedObject.name, x.reason, x.source?.component]))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * What the controller does on dispatch (docs/api.md "Agent protocol" step 1). Node-local storage
   * unless the spec says otherwise (the images are then read back from the node's directory).
   */
  async function dispatch(name: string, spec: Record<string, unknown>, uid = podUID) {
    await createCheckpoint(cluster, {
      apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint',
      metadata: { name, namespace: env.namespace },
      spec: { sourcePodName: 'db-0', storage: { nodeLocal: {} }, ...spec },
    });
    await patchCheckpoint(cluster, env.namespace, name, { metadata: { labels: { [LABEL_NODE]: env.node }, finalizers: [FINALIZER_IMAGES] } });
    await patchCheckpoint(cluster, env.namespace, name, { status: { phase: 'Dumping', nodeName: env.node, sourcePodUID: uid, dispatchTime: new Date().toISOString() } }, true);
  }

  it('dumps every container of the pod into its own image and reports the counts', async () => {
    await dispatch('move-all', { restore: { mode: 'Retake' } });
    const cp = await waitForCheckpoint(cluster, env.namespace, 'move-all', (c) => c?.status?.agent?.state === 'Dumped' || c?.status?.agent?.state === 'Failed', 'the agent report');
    const a = cp!.status!.agent!;
    expect(a.message).not.toContain('Failed');
    expect(a.state).toBe('Dumped');
    expect(a.nodeName).toBe(env.node);
    expect(a.podUID).toBe(podUID);
    // posix.lock + the SQLite database (one merged POSIX range), one flock, one OFD
    expect(a.locks).toEqual({ posix: 2, flock: 1, ofd: 1, lease: 0, total: 4 });
    expect(a.files).toBe(4);
    expect(a.imageLocation).toBe(path.join(storageRoot, env.namespace, 'move-all'));
    expect(a.dumpMilliseconds).toBeGreaterThanOrEqual(0);

    const db = readCheckpoint(path.join(a.imageLocation!, 'db'));
    expect(db.source.pod).toMatchObject({ namespace: env.namespace, name: 'db-0', uid: podUID, containers: ['db'] });
    expect(db.files.map((f) => path.basename(f.path)).sort()).toEqual(['app.db', 'flock.lock', 'ofd.lock', 'posix.lock']);
    const sqlite = db.locks.find((l) => db.files.find((f) => f.id === l.fileId)?.path.endsWith('app.db'));
    expect(sqlite).toMatchObject({ kind: 'POSIX', type: 'WRITE', start: 1073741824n });
    const idle = readCheckpoint(path.join(a.imageLocation!, 'idle'));
    expect(idle.locks).toHaveLength(0);
    expect(fs.readdirSync(a.imageLocation!).sort()).toEqual(['db', 'idle']); // the sandbox is no container
    expect(vault.list()).toEqual([]); // Retake: nothing taken over
    const metrics = await agent.metrics.registry.metrics();
    expect(metrics).toMatch(/lockmig_agent_dumps_total\{result="Dumped"\} [1-9]/);
    expect(metrics).toMatch(/lockmig_agent_locks_dumped_total\{kind="POSIX"\} 2/);

    // CRIU's own decoder reads the lock image
    // the Dumped event, recorded with the chart's RBAC
    const ev = await waitForEvent(a.nodeName!, 'move-all', 'Dumped');
    expect(ev).toMatchObject({ type: 'Normal', source: { component: 'lockmig-agent', host: env.node }, involvedObject: { kind: 'LockCheckpoint', name: 'move-all' } });

    const crit = spawnSync('crit', ['decode', '-i', path.join(a.imageLocation!, 'db', 'filelocks.img')], { encoding: 'utf8' });
    expect(crit.status, crit.stderr).toBe(0);
    const entries = JSON.parse(crit.stdout).entries as Array<{ flag: number }>;
    expect(entries.map((e) => e.flag).sort()).toEqual([1, 1, 2, 4]);
  });

  it('dumps only spec.containers and fails clearly for a container the pod lacks', async () => {
    await dispatch('only-db', { containers: ['db'], lockKinds: ['OFD', 'FLOCK'], restore: { mode: 'Retake' } });
    const cp = await waitForCheckpoint(cluster, env.namespace, 'only-db', (c) => !!c?.status?.agent && c.status.agent.state !== 'Dumping', 'the agent report');
    expect(cp!.status!.agent).toMatchObject({ state: 'Dumped', locks: { posix: 0, flock: 1, ofd: 1, total: 2 } });
    expect(fs.readdirSync(cp!.status!.agent!.imageLocation!)).toEqual(['db']);

    await dispatch('no-such', { containers: ['wal'] });
    const bad = await waitForCheckpoint(cluster, env.namespace, 'no-such', (c) => c?.status?.agent?.state === 'Failed', 'the failure report');
    expect(bad!.status!.agent).toMatchObject({ reason: 'ContainerNotFound' });
    expect((await waitForEvent(env.node, 'no-such', 'ContainerNotFound')).type).toBe('Warning');
    expect(bad!.status!.agent!.message).toContain('no container "wal"');
  });

  it('Auto: the vault takes the descriptions (HandoverReady); when the hold time runs out the report falls back to Dumped', async () => {
    await dispatch('hold-short', { containers: ['db'], restore: { mode: 'Auto', holdSeconds: 2 } });
    const ready = await waitForCheckpoint(cluster, env.namespace, 'hold-short', (c) => !!c?.status?.agent && c.status.agent.state !== 'Dumping', 'the agent report');
    expect(ready!.status!.agent).toMatchObject({ state: 'HandoverReady', handoverSocket: path.join(storageRoot, 'vault.sock') });
    expect(vault.list()).toEqual([expect.objectContaining({ name: `${env.namespace}/hold-short.db`, state: 'held', files: 4 })]);
    const lost = await waitForCheckpoint(cluster, env.namespace, 'hold-short', (c) => c?.status?.agent?.state === 'Dumped', 'the fallback to Dumped', 15_000);
    expect(lost!.status!.agent!.handoverSocket).toBeUndefined();
    expect(lost!.status!.agent!.message).toContain('re-takes the locks');
    expect(vault.list()).toEqual([expect.objectContaining({ name: `${env.namespace}/hold-short.db`, state: 'released' })]);
  });

  it('api storage: the images become ConfigMaps owned by the checkpoint (server-side apply, with the chart\'s RBAC)', async () => {
    await dispatch('in-api', { containers: ['db'], storage: { api: {} }, restore: { mode: 'Retake' } });
    const cp = await waitForCheckpoint(cluster, env.namespace, 'in-api', (c) => !!c?.status?.agent && c.status.agent.state !== 'Dumping', 'the agent report');
    const a = cp!.status!.agent! as typeof cp.status.agent & { storage?: string; configMaps?: Array<{ name: string; items: Array<{ key: string; path: string }> }> };
    expect(a.state, a.message).toBe('Dumped');
    expect(a.storage).toBe('api');
    const cms = (await cluster.core.listNamespacedConfigMap({ namespace: env.namespace, labelSelector: `lockmig.dev/checkpoint-uid=${cp!.metadata.uid}` })).items;
    expect(cms.map((c) => c.metadata!.name).sort()).toEqual(a.configMaps!.map((c) => c.name).sort());
    for (const c of cms) {
      expect(c.metadata!.ownerReferences).toEqual([expect.objectContaining({ kind: 'LockCheckpoint', name: 'in-api', uid: cp!.metadata.uid, controller: true })]);
      expect(c.metadata!.managedFields?.map((f) => f.manager)).toContain('lockmig-agent');
    }
    const keys = cms.flatMap((c) => Object.keys(c.binaryData ?? {}));
    for (const item of a.configMaps!.flatMap((c) => c.items)) expect(keys).toContain(item.key);
    expect(a.configMaps!.flatMap((c) => c.items).map((i) => i.path)).toContain('db/filelocks.img');
  });

  it('a full disk fails the checkpoint with ENOSPC and leaves no partial image behind', async () => {
    // the namespace's directory under the storage root: a 16 KiB tmpfs, full before the dump
    const nsDir = path.join(storageRoot, env.namespace);
    fs.mkdirSync(nsDir, { recursive: true });
    const m = spawnSync('sh', ['-c', `mount -t tmpfs -o size=16k lockmig-test-full '${nsDir}' && (dd if=/dev/zero of='${nsDir}/filler' bs=1k count=64 2>/dev/null; true)`], { encoding: 'utf8' });
    expect(m.status, m.stderr).toBe(0);
    try {
      await dispatch('full-disk', { containers: ['db'], restore: { mode: 'Retake' } });
      const cp = await waitForCheckpoint(cluster, env.namespace, 'full-disk', (c) => !!c?.status?.agent && c.status.agent.state !== 'Dumping', 'the agent report');
      expect(cp!.status!.agent).toMatchObject({ state: 'Failed' });
      expect(cp!.status!.agent!.message).toMatch(/ENOSPC|no space/i);
      expect(fs.readdirSync(nsDir)).toEqual(['filler']);
    } finally {
      spawnSync('umount', ['-l', nsDir]);
    }
  });

  it('refuses a pod that was replaced since dispatch', async () => {
    await dispatch('replaced', {}, '00000000-0000-4000-8000-000000000000');
    const cp = await waitForCheckpoint(cluster, env.namespace, 'replaced', (c) => c?.status?.agent?.state === 'Failed', 'the failure report');
    expect(cp!.status!.agent!.reason).toBe('SourcePodReplaced');
    expect(fs.existsSync(path.join(storageRoot, env.namespace, 'replaced'))).toBe(false);
  });

  it('deletes the images when the checkpoint is deleted (finalizer protocol)', async () => {
    const dir = path.join(storageRoot, env.namespace, 'move-all');
    expect(fs.existsSync(dir)).toBe(true);
    await cluster.custom.deleteNamespacedCustomObject({ group: 'lockmig.dev', version: 'v1alpha1', namespace: env.namespace, plural: 'lockcheckpoints', name: 'move-all' });
    const cp = await waitForCheckpoint(cluster, env.namespace, 'move-all', (c) => c?.status?.agent?.imagesDeleted === true, 'imagesDeleted');
    expect(cp!.metadata.deletionTimestamp).toBeTruthy();
    expect(fs.existsSync(dir)).toBe(false);
    // the controller would now drop the finalizer
    await patchCheckpoint(cluster, env.namespace, 'move-all', { metadata: { finalizers: null } });
  });

  it('a restarted agent takes the descriptions again from a source that still runs (HandoverResumed) instead of reporting them lost', async () => {
    await dispatch('resume', { containers: ['db'], restore: { mode: 'Auto', holdSeconds: 300 } });
    const first = await waitForCheckpoint(cluster, env.namespace, 'resume', (c) => c?.status?.agent?.state === 'HandoverReady', 'HandoverReady');
    expect(first!.status!.agent!.locks).toMatchObject({ total: 4 });
    // the agent dies with its vault (the descriptions it held are closed; the source keeps its own locks)
    await agent.stop();
    await vault.close();
    vault = new Vault({ socketPath: path.join(storageRoot, 'vault-2.sock'), logger: silentLogger() });
    vault.start();
    const events = new EventRecorder({ sink: kubeEventSink(identity.kubeConfig), clock: realClock, logger: silentLogger(), component: 'lockmig-agent', instance: env.node });
    agent = new Agent({
      kc: identity.kubeConfig, node: env.node, storageRoot, procRoot: '/proc', logger: silentLogger(),
      dump: dumpProcesses, write: writeCheckpoint, now: () => new Date(), vault, events,
    });
    await agent.start();
    const ev = await waitForEvent(env.node, 'resume', 'HandoverResumed');
    expect(ev.type).toBe('Normal');
    const cp = await waitForCheckpoint(cluster, env.namespace, 'resume', (c) => !!c?.status?.agent?.message?.includes('took them again'), 'the resumed report');
    expect(cp!.status!.agent).toMatchObject({ state: 'HandoverReady', handoverSocket: path.join(storageRoot, 'vault-2.sock'), locks: { total: 4 } });
    expect(cp!.status!.agent!.handoverLostTime).toBeUndefined();
    expect(vault.list()).toContainEqual(expect.objectContaining({ name: `${env.namespace}/resume.db`, state: 'held', files: 4 }));
    const lostEvents = (await cluster.core.listNamespacedEvent({ namespace: env.namespace })).items.filter((e) => e.involvedObject.name === 'resume' && e.reason === 'HandoverLost');
    expect(lostEvents).toEqual([]);
    expect(await agent.metrics.registry.getSingleMetricAsString('lockmig_agent_handover_resumed_total')).toMatch(/ 1$/m);
  });
});
