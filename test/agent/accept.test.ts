/**
 * The agent under a burst, on a real kube-apiserver: checkpoints dispatched together are all
 * accepted (status.agent Dumping, what the controller's accept timeout waits for) before the dumps
 * run, so the last of a burst is not failed as AgentUnavailable while the agent is busy dumping
 * the others (bench/scale.ts found 170 of 500 failed that way). One worker and a dump made slow on
 * purpose (the real dump, after a busy wait: synchronous like the real one), so the order the API
 * server records cannot come from timing luck; a watch sees every status change in that order.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
import { FINALIZER_IMAGES, GROUP, LABEL_NODE, PLURAL, VERSION } from '../../src/api/index.js';
import { Agent } from '../../src/agent/agent.js';
import { dumpProcesses } from '../../src/engine/dump.js';
import { writeCheckpoint } from '../../src/image/index.js';
import { silentLogger } from '../../src/log/logger.js';
import { ResilientInformer } from '../../src/kube/informer.js';
import { realClock } from '../../src/kube/clock.js';
import { missing } from '../helpers/env.js';
import {
  HOLDER, KubeletCgroups, connectCluster, containerID, createCheckpoint, createRunningPod, patchCheckpoint, setupNamespaceAndNode, type Cluster,
} from './support/virtual-pods.js';

const skip = missing({ root: true, tools: ['python3'], k8s: true }, 'agent accepting a burst on a real API server');
const DUMP_MS = 700;

describe.skipIf(skip)('lockmig agent under a burst', () => {
  let cluster: Cluster;
  let env: Awaited<ReturnType<typeof setupNamespaceAndNode>>;
  let cgroups: KubeletCgroups;
  let agent: Agent;
  let watch: ResilientInformer<KubernetesObject>;
  let storageRoot: string;
  let dataDir: string;
  let podUID: string;
  const seen: string[] = [];

  beforeAll(async () => {
    cluster = await connectCluster();
    env = await setupNamespaceAndNode(cluster, 'burst');
    cgroups = new KubeletCgroups('burst');
    storageRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-burst-store-'));
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-burst-data-'));
    const id = containerID();
    const pod = await createRunningPod(cluster, {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'db-0', namespace: env.namespace },
      spec: { nodeName: env.node, containers: [{ name: 'db', image: 'example/db', command: ['python3', HOLDER] }] },
    }, { db: id });
    podUID = pod.metadata!.uid!;
    await cgroups.start(cgroups.container({ podUID, containerID: id }), ['python3', HOLDER, '--flock', `${dataDir}/flock.lock`]);

    const custom = cluster.custom;
    watch = new ResilientInformer<KubernetesObject>({
      kubeConfig: cluster.kc, path: `/apis/${GROUP}/${VERSION}/namespaces/${env.namespace}/${PLURAL}`,
      list: async () => (await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: env.namespace })) as KubernetesListObject<KubernetesObject>,
      clock: realClock, logger: silentLogger(), name: 'test',
    });
    const last = new Map<string, string>();
    watch.on('update', (o) => {
      const state = (o as { status?: { agent?: { state?: string } } }).status?.agent?.state;
      if (state && last.get(o.metadata!.name!) !== state) { last.set(o.metadata!.name!, state); seen.push(`${o.metadata!.name} ${state}`); }
    });
    await watch.start();
    await watch.waitForSync();

    agent = new Agent({
      kc: cluster.kc, node: env.node, storageRoot, procRoot: '/proc', logger: silentLogger(), now: () => new Date(), write: writeCheckpoint,
      workers: 1,
      // the real dump, made slow the way a big one is: synchronously
      dump: (o) => { const end = performance.now() + DUMP_MS; while (performance.now() < end) { /* busy */ } return dumpProcesses(o); },
      watchRestorePods: false,
    });
  });

  afterAll(async () => {
    await agent?.stop();
    await watch?.stop();
    await cgroups?.cleanup();
    await env?.cleanup();
    await cluster?.close();
    for (const d of [storageRoot, dataDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  it('accepts every checkpoint of a burst before it dumps any, then dumps them all', async () => {
    const names = ['b-0', 'b-1', 'b-2', 'b-3'];
    // dispatched as the controller does (label + finalizer, then status Dumping), all before the agent starts
    for (const name of names) {
      await createCheckpoint(cluster, {
        apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name, namespace: env.namespace },
        spec: { sourcePodName: 'db-0', storage: { nodeLocal: {} }, restore: { mode: 'Retake' } },
      });
      await patchCheckpoint(cluster, env.namespace, name, { metadata: { labels: { [LABEL_NODE]: env.node }, finalizers: [FINALIZER_IMAGES] } });
      await patchCheckpoint(cluster, env.namespace, name, { status: { phase: 'Dumping', nodeName: env.node, sourcePodUID: podUID, dispatchTime: new Date().toISOString() } }, true);
    }
    await agent.start();
    const deadline = Date.now() + 60_000;
    while (seen.filter((s) => s.endsWith(' Dumped')).length < names.length) {
      if (Date.now() > deadline) throw new Error(`not all dumped; seen: ${seen.join(', ')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const firstDumped = seen.findIndex((s) => s.endsWith(' Dumped'));
    // every acceptance comes before the first report of a finished dump
    expect(seen.slice(0, firstDumped).sort()).toEqual(names.map((n) => `${n} Dumping`));
    expect(seen.slice(firstDumped).sort()).toEqual(names.map((n) => `${n} Dumped`));
    for (const name of names) {
      const cp = watch.get(name, env.namespace) as { status?: { agent?: { locks?: { flock?: number }; dumpMilliseconds?: number } } };
      expect(cp.status?.agent?.locks?.flock).toBe(1);
      expect(cp.status?.agent?.dumpMilliseconds).toBeGreaterThanOrEqual(DUMP_MS);
    }
  });
});
