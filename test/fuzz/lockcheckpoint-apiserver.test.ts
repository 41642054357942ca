/**
 * LockCheckpoint objects under fuzz through a real kube-apiserver and the real controller (as the
 * chart's ServiceAccount): the generator of lockcheckpoint-gen.ts (valid, absurd — schema-valid at
 * every edge: 253-character names, 64 containers, 512-character unicode paths, a year of TTL — and
 * invalid specs; no status, controller-like, hand-edited and garbage statuses), created as a client
 * would, their statuses written through the status subresource, some with a source pod bound to a
 * node where no agent runs. The API server decides what it stores; for everything it stored:
 *  - the controller never crashes (its health endpoint answers, its run has not ended) and never
 *    hot-loops (bounded writes per object, and the objects go quiet);
 *  - every object ends in a phase with a Ready condition and a reason — never without a status;
 *  - a spec the controller's own validation refuses ends Failed/InvalidSpec.
 *
 *   LOCKMIG_FUZZ_APISERVER_CASES  number of objects (default 150; `npm run fuzz` runs 1000)
 *   LOCKMIG_FUZZ_SEED             seed (default: a new one, printed)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CoreV1Api, CustomObjectsApi, Watch } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { startController, type RunningController } from '../../src/controller/main.js';
import { GROUP, PLURAL, VERSION, validateSpec } from '../../src/api/lockcheckpoint.js';
import { silentLogger } from '../../src/log/logger.js';
import type { RunningServer } from '../../src/kube/server.js';
import { missing } from '../helpers/env.js';
import {
  chartIdentity, createTestNamespace, installCrd, startApiServer, stripCheckpointFinalizers, type KubeApiServer,
} from '../support/envtest/index.js';
import { makeScenario } from './lockcheckpoint-gen.js';
import { newSeed } from './rng.js';

const skip = missing({ k8s: true }, 'LockCheckpoint fuzz against a real API server');
const SEED = process.env.LOCKMIG_FUZZ_SEED || newSeed();
const CASES = Number(process.env.LOCKMIG_FUZZ_APISERVER_CASES ?? 150);
/** writes of one object by the controller beyond which it counts as a hot loop */
const MAX_WRITES = 25;

let api: KubeApiServer;
let ctl: RunningController;
let servers: { metrics?: RunningServer; health?: RunningServer } = {};
const ac = new AbortController();
let NS = '';
let ctlEnded = false;

beforeAll(async () => {
  if (skip) return;
  api = await startApiServer({ watchCache: false });
  await installCrd(api);
  NS = (await createTestNamespace(api.kubeConfig, { prefix: 'fuzz' })).name;
  const home = (await createTestNamespace(api.kubeConfig, { prefix: 'fuzz-ctl' })).name;
  const id = await chartIdentity(api, 'controller', home, { values: { controller: { leaderElect: false } } });
  ctl = await startController({
    kubeConfig: id.kubeConfig, logger: silentLogger(), metricsAddr: '127.0.0.1:0', healthAddr: '127.0.0.1:0', registry: new Registry(),
    // no agent runs: dispatched checkpoints fail fast (AgentUnavailable), missing pods too
    config: { agentAcceptTimeoutMs: 1500, podWaitTimeoutMs: 2000, pollIntervalMs: 300, imageDeletionTimeoutMs: 3000, claimGraceMs: 2000 },
    onListening: (s) => { servers = s; },
  }, ac.signal);
  void ctl.done.then(() => { ctlEnded = true; }, () => { ctlEnded = true; });
}, 120_000);

afterAll(async () => {
  if (skip) return;
  await stripCheckpointFinalizers(api.kubeConfig, NS).catch(() => undefined);
  ac.abort();
  await ctl?.done.catch(() => undefined);
  await api?.stop();
});

describe.skipIf(skip)('LockCheckpoint objects under fuzz, real API server + controller', () => {
  it(`${CASES} generated objects: stored ones settle with a phase and a reason, invalid specs end Failed/InvalidSpec, no crash, no hot loop`, async () => {
    process.stderr.write(`\n[fuzz] LockCheckpoint API-server fuzz seed ${SEED} (replay: LOCKMIG_FUZZ_SEED=${SEED})\n`);
    const custom = api.kubeConfig.makeApiClient(CustomObjectsApi);
    const core = api.kubeConfig.makeApiClient(CoreV1Api);
    const CK = { group: GROUP, version: VERSION, plural: PLURAL, namespace: NS };

    // every write the controller (or anyone) makes to the objects, per name
    const writes = new Map<string, number>();
    let lastChange = Date.now();
    const watch = await new Watch(api.kubeConfig).watch(`/apis/${GROUP}/${VERSION}/namespaces/${NS}/${PLURAL}`, {}, (type, obj: { metadata: { name: string } }) => {
      if (type === 'MODIFIED') writes.set(obj.metadata.name, (writes.get(obj.metadata.name) ?? 0) + 1);
      lastChange = Date.now();
    }, () => undefined);

    const stored = new Map<string, { invalidSpec: boolean; statusPhase?: string; kind: string }>();
    let invalidStored = 0;
    const refused: Record<string, number> = {};
    const pods = new Set<string>();
    for (let i = 0; i < CASES; i++) {
      const s = makeScenario(SEED, i);
      const o = structuredClone(s.object) as { metadata?: Record<string, unknown>; spec?: unknown; status?: Record<string, unknown> };
      // what a client sends on create: no uid, resourceVersion or timestamps (the server sets them)
      if (o.metadata) {
        const { name: n, labels, annotations, finalizers } = o.metadata;
        o.metadata = { name: n, namespace: NS, ...(labels ? { labels } : {}), ...(annotations ? { annotations } : {}), ...(finalizers ? { finalizers } : {}) };
      }
      const name = typeof o.metadata?.name === 'string' ? o.metadata.name : undefined;
      const status = o.status;
      delete o.status;
      if (s.pod?.metadata?.name && !pods.has(s.pod.metadata.name)) {
        pods.add(s.pod.metadata.name);
        try {
          const p = await core.createNamespacedPod({ namespace: NS, body: { metadata: { name: s.pod.metadata.name }, spec: { ...(s.pod.spec?.nodeName ? { nodeName: s.pod.spec.nodeName } : {}), containers: (s.pod.spec?.containers ?? [{ name: 'db' }]).slice(0, 8).map((c) => ({ name: c.name, image: 'busybox' })) } } });
          if (s.pod.status?.phase) await core.replaceNamespacedPodStatus({ name: p.metadata!.name!, namespace: NS, body: { ...p, status: { phase: s.pod.status.phase } } });
        } catch { /* a pod the server refuses is simply not there */ }
      }
      let created: { spec?: unknown };
      try {
        created = (await custom.createNamespacedCustomObject({ ...CK, body: o })) as { spec?: unknown };
      } catch (err) {
        const code = (err as { code?: number }).code ?? 0;
        refused[`${s.specKind}:${code}`] = (refused[`${s.specKind}:${code}`] ?? 0) + 1;
        continue;
      }
      let statusPhase: string | undefined;
      if (status && name) {
        try {
          const cur = (await custom.getNamespacedCustomObject({ ...CK, name })) as Record<string, unknown>;
          await custom.replaceNamespacedCustomObjectStatus({ ...CK, name, body: { ...cur, status } });
          statusPhase = typeof status.phase === 'string' ? status.phase : undefined;
        } catch { /* the server refused the status: the object keeps whatever the controller wrote */ }
      }
      let invalidSpec = false;
      // judged on the spec as the server stored it (pruned, defaulted), which is what the controller reads
      try { invalidSpec = validateSpec(created.spec).length > 0; } catch { invalidSpec = true; }
      if (invalidSpec) invalidStored++;
      stored.set(name!, { invalidSpec, kind: `${s.specKind}/${s.statusKind}`, ...(statusPhase ? { statusPhase } : {}) });
    }
    expect(stored.size, 'the API server stored some of the objects').toBeGreaterThan(CASES / 4);

    // quiet: no write to any object for 3 s (bounded: a hot loop never goes quiet)
    const deadline = Date.now() + 90_000;
    while (Date.now() - lastChange < 3000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    expect(Date.now() - lastChange, 'the objects went quiet').toBeGreaterThanOrEqual(3000);
    watch.abort();

    const list = (await custom.listNamespacedCustomObject(CK)) as { items: Array<{ metadata: { name: string; deletionTimestamp?: string }; status?: { phase?: string; conditions?: Array<{ type: string; status: string; reason?: string }> } }> };
    const byName = new Map(list.items.map((x) => [x.metadata.name, x]));
    const outcomes: Record<string, number> = {};
    const failures: string[] = [];
    for (const [name, info] of stored) {
      const x = byName.get(name);
      if (!x) { outcomes['deleted (TTL)'] = (outcomes['deleted (TTL)'] ?? 0) + 1; continue; }
      const ready = x.status?.conditions?.find((c) => c.type === 'Ready');
      const key = `${x.status?.phase ?? '(no phase)'}/${ready?.reason ?? '(no reason)'}`;
      outcomes[key] = (outcomes[key] ?? 0) + 1;
      if (!x.status?.phase || !ready?.reason) failures.push(`${name} (${info.kind}): no phase or Ready reason: ${JSON.stringify(x.status).slice(0, 300)}`);
      if (info.invalidSpec && info.statusPhase !== 'Failed' && !x.metadata.deletionTimestamp && !(x.status?.phase === 'Failed' && ready?.reason === 'InvalidSpec')) {
        failures.push(`${name} (${info.kind}): invalid spec but ${key}`);
      }
      const n = writes.get(name) ?? 0;
      if (n > MAX_WRITES) failures.push(`${name} (${info.kind}): written ${n} times (hot loop?)`);
    }
    const health = await fetch(`http://127.0.0.1:${servers.health!.port}/healthz`);
    const top = (o: Record<string, number>) => Object.entries(o).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ');
    const maxWrites = Math.max(0, ...writes.values());
    process.stderr.write(`LockCheckpoint API-server fuzz: seed ${SEED}, ${CASES} objects, ${stored.size} stored (${invalidStored} with a spec the controller must refuse), max writes per object ${maxWrites}\n  refused by the API server: ${top(refused)}\n  outcomes: ${top(outcomes)}\n`);
    for (const f of failures.slice(0, 15)) process.stderr.write(`  ${f}\n`);
    expect(ctlEnded, 'the controller is still running').toBe(false);
    expect(health.status).toBe(200);
    expect(failures.slice(0, 20)).toEqual([]);
    expect(Object.keys(refused).length, 'the API server refused some objects (the schema is in force)').toBeGreaterThan(0);
  }, 600_000);
});
