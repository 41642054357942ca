/**
 * ResilientInformer with the real client-node ListWatch against a real kube-apiserver (watch cache
 * off, so an etcd compaction reaches clients as a real 410 Gone), reached through the fault proxy
 * for the failures a network or load balancer causes: plain ListWatch stops for good on a failed
 * list; ours restarts with backoff, relists, and the relist reports objects deleted while it was
 * down; it also survives a real apiserver restart. Plus the event recorder's aggregation (real
 * core/v1 Events) and the health/metrics server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CoreV1Api, CustomObjectsApi, makeInformer, type V1ConfigMap } from '@kubernetes/client-node';
import { Registry, Counter } from 'prom-client';
import { ResilientInformer } from '../../src/kube/informer.js';
import { realClock, FakeClock } from '../../src/kube/clock.js';
import { EventRecorder, kubeEventSink } from '../../src/kube/events.js';
import { startServer, parseAddr } from '../../src/kube/server.js';
import { silentLogger } from '../../src/log/logger.js';
import { missing } from '../helpers/env.js';
import { createTestNamespace, startApiServer, startFaultProxy, type FaultProxy, type KubeApiServer } from '../support/envtest/index.js';

const skip = missing({ k8s: true }, 'informer and events on a real API server');
let api: KubeApiServer;
let proxy: FaultProxy;
let core: CoreV1Api;
let NS = '';
let OTHER = '';

async function waitFor(what: string, fn: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const cm = (name: string, namespace = NS) => core.createNamespacedConfigMap({ namespace, body: { metadata: { name }, data: { a: '1' } } });
/** Writes elsewhere: the global revision moves on while the watched collection does not change. */
const bumpElsewhere = async (n = 2) => { for (let i = 0; i < n; i++) await cm(`bump-${Date.now()}-${i}`, OTHER); };
const watchesOf = (p: FaultProxy, path: string) => p.requests.filter((r) => r.watch && r.path === path);

beforeAll(async () => {
  if (skip) return;
  api = await startApiServer({ watchCache: false });
  proxy = await startFaultProxy(api);
  core = api.kubeConfig.makeApiClient(CoreV1Api);
  NS = (await createTestNamespace(api.kubeConfig, { prefix: 'inf' })).name;
  OTHER = (await createTestNamespace(api.kubeConfig, { prefix: 'other' })).name;
});
afterAll(async () => {
  await proxy?.close();
  await api?.stop();
});

describe.skipIf(skip)('ResilientInformer', () => {
  it('the library alone stops for good after a failed list (why this wrapper exists)', async () => {
    const path = `/api/v1/namespaces/${NS}/configmaps`;
    const pcore = proxy.kubeConfig.makeApiClient(CoreV1Api);
    const inf = makeInformer<V1ConfigMap>(proxy.kubeConfig, path, () => pcore.listNamespacedConfigMap({ namespace: NS }));
    const errors: unknown[] = [];
    inf.on('error', (e) => errors.push(e));
    await inf.start();
    await waitFor('the watch', () => proxy.activeWatches() === 1);
    // History older than the informer's resourceVersion is compacted away; its watch is cut, it
    // resumes from that version and the real server answers 410 Gone; the relist then fails.
    await bumpElsewhere();
    await api.compact();
    proxy.fail({ path, watch: false, method: 'GET', status: 500, times: 1 });
    proxy.cutWatches();
    await waitFor('error', () => errors.length > 0);
    expect(watchesOf(proxy, path).flatMap((r) => r.watchErrors)).toContain(410);
    await cm('unseen');
    await new Promise((r) => setTimeout(r, 500));
    expect(inf.get('unseen', NS)).toBeUndefined();
    expect(proxy.activeWatches()).toBe(0);
    await inf.stop();
    await core.deleteNamespacedConfigMap({ name: 'unseen', namespace: NS });
  });

  it('restarts after errors with backoff, relists, and reports deletions that happened while it was down', async () => {
    const path = `/api/v1/namespaces/${NS}/configmaps`;
    const pcore = proxy.kubeConfig.makeApiClient(CoreV1Api);
    const restarts: number[] = [];
    const inf = new ResilientInformer<V1ConfigMap>({
      kubeConfig: proxy.kubeConfig, path, list: () => pcore.listNamespacedConfigMap({ namespace: NS }), clock: realClock, logger: silentLogger(),
      name: 'configmaps', backoffBaseMs: 50, backoffMaxMs: 200, onRestart: (_e, d) => restarts.push(d),
    });
    const seen = { add: [] as string[], del: [] as string[] };
    inf.on('add', (o) => seen.add.push(o.metadata?.name ?? ''));
    inf.on('delete', (o) => seen.del.push(o.metadata?.name ?? ''));
    await cm('keep');
    await cm('doomed');
    await inf.start();
    await inf.waitForSync();
    expect(inf.synced).toBe(true);
    expect(inf.list(NS).map((o) => o.metadata?.name).sort()).toEqual(['doomed', 'keep']);
    await waitFor('the watch', () => proxy.activeWatches() === 1);

    // outage: the watch reconnect answers 500 and every list 503 until the outage ends
    proxy.fail({ path, watch: true, status: 500, times: 1 });
    const lists = proxy.fail({ path, watch: false, method: 'GET', status: 503, times: Infinity });
    proxy.cutWatches(); // a clean end: ListWatch resumes the watch, which gets the 500
    await waitFor('two restarts scheduled', () => restarts.length >= 2);
    // while it is down, one object is deleted and one created, and the history is compacted
    await core.deleteNamespacedConfigMap({ name: 'doomed', namespace: NS });
    await cm('fresh');
    await api.compact();
    expect(inf.get('doomed', NS)).toBeDefined();
    lists.cancel();
    await waitFor('recovered', () => inf.get('fresh', NS) !== undefined && inf.get('doomed', NS) === undefined);
    expect(seen.del).toContain('doomed');
    expect(restarts[1]).toBeGreaterThanOrEqual(restarts[0]! / 2); // backoff does not shrink below the jitter floor
    expect(inf.restarts).toBeGreaterThanOrEqual(2);
    expect(inf.error).toBeUndefined();

    // and it keeps watching afterwards
    await cm('later');
    await waitFor('watch after recovery', () => inf.get('later', NS) !== undefined);
    await inf.stop();
  });

  it('survives a real API server restart: reconnects, relists and keeps watching', async () => {
    const ns = (await createTestNamespace(api.kubeConfig, { prefix: 'restart' })).name;
    const path = `/api/v1/namespaces/${ns}/configmaps`;
    const inf = new ResilientInformer<V1ConfigMap>({
      kubeConfig: api.kubeConfig, path, list: () => core.listNamespacedConfigMap({ namespace: ns }), clock: realClock, logger: silentLogger(),
      name: 'configmaps', backoffBaseMs: 100, backoffMaxMs: 1000,
    });
    await cm('before', ns);
    await inf.start();
    await inf.waitForSync();
    await api.stopApiServer();
    try {
      await waitFor('the informer to notice the outage', () => inf.error !== undefined);
      // the open watch is torn ("Premature close") or the reconnect refused
      expect(inf.error).toMatch(/Premature close|ECONNREFUSED|socket hang up|ECONNRESET/);
    } finally {
      await api.startApiServer();
    }
    await cm('after', ns);
    await waitFor('the object created after the restart', () => inf.get('after', ns) !== undefined, 30_000);
    expect(inf.get('before', ns)).toBeDefined();
    expect(inf.error).toBeUndefined();
    expect(inf.restarts).toBeGreaterThanOrEqual(1);
    await inf.stop();
  }, 90_000);
});

describe.skipIf(skip)('ResilientInformer with the watch cache (as on clusters)', () => {
  let cached: KubeApiServer;
  let cproxy: FaultProxy;
  beforeAll(async () => {
    cached = await startApiServer();
    cproxy = await startFaultProxy(cached);
  }, 120_000);
  afterAll(async () => {
    await cproxy?.close();
    await cached?.stop();
  });

  it('asks for bookmarks and a server-side timeout: the server ends the watch, it resumes from the bookmark, no relist', async () => {
    const ccore = cached.kubeConfig.makeApiClient(CoreV1Api);
    const ns = (await createTestNamespace(cached.kubeConfig, { prefix: 'bm' })).name;
    const other = (await createTestNamespace(cached.kubeConfig, { prefix: 'bm-other' })).name;
    const pcore = cproxy.kubeConfig.makeApiClient(CoreV1Api);
    const path = `/api/v1/namespaces/${ns}/configmaps`;
    const inf = new ResilientInformer<V1ConfigMap>({
      kubeConfig: cproxy.kubeConfig, path, list: () => pcore.listNamespacedConfigMap({ namespace: ns }), clock: realClock, logger: silentLogger(),
      name: 'configmaps', watchTimeoutSeconds: 5,
    });
    await inf.start();
    await inf.waitForSync();
    // writes the informer does not watch: only a bookmark can tell it that the resourceVersion moved on
    await ccore.createNamespacedConfigMap({ namespace: other, body: { metadata: { name: 'elsewhere' } } });
    const mine = () => cproxy.requests.filter((r) => r.path === path);
    await waitFor('a second watch (the server ended the first)', () => mine().filter((r) => r.watch).length >= 2, 30_000);
    const [list, first, second] = mine();
    expect(list!.watch).toBe(false);
    for (const w of [first!, second!]) expect(w.query).toMatchObject({ watch: 'true', allowWatchBookmarks: 'true', timeoutSeconds: '5' });
    expect(mine().filter((r) => !r.watch)).toHaveLength(1); // resumed, not relisted
    expect(first!.bookmarks.length).toBeGreaterThan(0);
    expect(Number(first!.bookmarks.at(-1))).toBeGreaterThan(Number(first!.query.resourceVersion));
    expect(second!.query.resourceVersion).toBe(first!.bookmarks.at(-1));
    expect(inf.restarts).toBe(0);
    await ccore.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'seen' } } });
    await waitFor('an object created after the resume', () => inf.get('seen', ns) !== undefined);
    await inf.stop();
  }, 60_000);
});

describe.skipIf(skip)('ResilientInformer errors', () => {
  it('a resource that is not served (CRD missing) keeps retrying and says what is wrong', async () => {
    const custom = api.kubeConfig.makeApiClient(CustomObjectsApi);
    const path = '/apis/nothere.example/v1/widgets';
    const inf = new ResilientInformer({
      kubeConfig: api.kubeConfig, path, clock: realClock, logger: silentLogger(), name: 'widgets', backoffBaseMs: 20, backoffMaxMs: 50,
      list: async () => (await custom.listClusterCustomObject({ group: 'nothere.example', version: 'v1', plural: 'widgets' })) as never,
    });
    await inf.start();
    await waitFor('two attempts', () => inf.restarts >= 2);
    expect(inf.synced).toBe(false);
    expect(inf.error).toMatch(/404: \/apis\/nothere\.example\/v1\/widgets is not served; is its CustomResourceDefinition installed\?/);
    await inf.stop();
  });
});

describe('EventRecorder', () => {
  it.skipIf(skip)('creates a core/v1 Event with involvedObject, then aggregates repeats into count/lastTimestamp', async () => {
    const clock = new FakeClock(Date.parse('2026-03-01T10:00:00Z'));
    const rec = new EventRecorder({ sink: kubeEventSink(api.kubeConfig), clock, logger: silentLogger(), component: 'lockmig-controller', instance: 'r1' });
    const obj = { apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', name: 'ck', namespace: NS, uid: 'u-1' };
    await rec.record(obj, 'Warning', 'AgentUnavailable', 'no answer');
    await clock.advance(5000);
    await rec.record(obj, 'Warning', 'AgentUnavailable', 'no answer');
    await rec.record(obj, 'Warning', 'AgentUnavailable', 'no answer');
    await rec.record(obj, 'Normal', 'Dumped', 'ok');
    const evs = (await core.listNamespacedEvent({ namespace: NS })).items.filter((e) => e.involvedObject.name === 'ck');
    expect(evs).toHaveLength(2);
    const w = evs.find((e) => e.reason === 'AgentUnavailable');
    expect(w).toMatchObject({ type: 'Warning', message: 'no answer', count: 3, source: { component: 'lockmig-controller', host: 'r1' }, involvedObject: { kind: 'LockCheckpoint', uid: 'u-1', namespace: NS } });
    expect(new Date(w!.lastTimestamp as unknown as string).getTime() - new Date(w!.firstTimestamp as unknown as string).getTime()).toBe(5000);
  });

  it('a failing sink is logged, never thrown', async () => {
    const rec = new EventRecorder({
      sink: { create: async () => { throw new Error('forbidden'); }, patch: async () => {} }, clock: new FakeClock(), logger: silentLogger(), component: 'x',
    });
    await expect(rec.record({ apiVersion: 'v1', kind: 'Pod', name: 'p', namespace: 'n' }, 'Normal', 'R', 'm')).resolves.toBeUndefined();
  });
});

describe('health and metrics server', () => {
  it('answers /healthz, /readyz (503 naming the failing check) and /metrics', async () => {
    const reg = new Registry();
    new Counter({ name: 'lockmig_test_total', help: 'h', registers: [reg] }).inc(3);
    let synced = false;
    const s = await startServer({ addr: '127.0.0.1:0', registry: reg, health: { ping: () => true }, ready: { informers: () => synced || 'caches not synced' } });
    try {
      const get = async (p: string) => {
        const r = await fetch(`http://127.0.0.1:${s.port}${p}`);
        return { code: r.status, body: await r.text() };
      };
      expect(await get('/healthz')).toEqual({ code: 200, body: '[+]ping ok\nok\n' });
      const nr = await get('/readyz');
      expect(nr.code).toBe(503);
      expect(nr.body).toContain('[-]informers failed: caches not synced');
      synced = true;
      expect((await get('/readyz')).code).toBe(200);
      expect((await get('/metrics')).body).toContain('lockmig_test_total 3');
      expect((await get('/nope')).code).toBe(404);
    } finally {
      await s.close();
    }
  });

  it('parses listen addresses and rejects nonsense', () => {
    expect(parseAddr(':8080')).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(parseAddr('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseAddr('[::1]:9')).toEqual({ host: '::1', port: 9 });
    expect(() => parseAddr('8080')).toThrow(/expected \[host\]:port/);
    expect(() => parseAddr(':99999')).toThrow(/invalid port/);
  });
});
