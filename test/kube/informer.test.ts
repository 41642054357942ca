/**
 * ResilientInformer with the real client-node ListWatch against the in-memory API server:
 * plain ListWatch stops for good on a failed list; ours restarts with backoff, relists, and the
 * relist reports objects deleted while it was down. Also: the event recorder's aggregation and
 * the health/metrics server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CoreV1Api, makeInformer, type V1ConfigMap } from '@kubernetes/client-node';
import { Registry, Counter } from 'prom-client';
import { startFakeApiServer, type FakeApiServer } from '../support/apiserver/index.js';
import { ResilientInformer } from '../../src/kube/informer.js';
import { realClock, FakeClock } from '../../src/kube/clock.js';
import { EventRecorder, kubeEventSink } from '../../src/kube/events.js';
import { startServer, parseAddr } from '../../src/kube/server.js';
import { silentLogger } from '../../src/log/logger.js';

const NS = 'inf';
let srv: FakeApiServer;
let core: CoreV1Api;

async function waitFor(what: string, fn: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const cm = (name: string) => srv.create({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: NS }, data: { a: '1' } });

beforeAll(async () => {
  srv = await startFakeApiServer({ bookmarkIntervalMs: 200 });
  core = srv.kubeConfig.makeApiClient(CoreV1Api);
  await srv.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
});
afterAll(async () => {
  await srv?.close();
});

describe('ResilientInformer', () => {
  it('the library alone stops for good after a failed list (why this wrapper exists)', async () => {
    const path = `/api/v1/namespaces/${NS}/configmaps`;
    const inf = makeInformer<V1ConfigMap>(srv.kubeConfig, path, () => core.listNamespacedConfigMap({ namespace: NS }));
    const errors: unknown[] = [];
    inf.on('error', (e) => errors.push(e));
    await inf.start();
    srv.injectFailure({ path, watch: false, method: 'GET', code: 500, times: 1 });
    srv.compact(); // watch gets 410 → relist → the list fails → stopped
    await waitFor('error', () => errors.length > 0);
    await cm('unseen');
    await new Promise((r) => setTimeout(r, 500));
    expect(inf.get('unseen', NS)).toBeUndefined();
    await inf.stop();
    await srv.delete('v1', 'ConfigMap', 'unseen', NS);
  });

  it('restarts after errors with backoff, relists, and reports deletions that happened while it was down', async () => {
    const path = `/api/v1/namespaces/${NS}/configmaps`;
    const restarts: number[] = [];
    const inf = new ResilientInformer<V1ConfigMap>({
      kubeConfig: srv.kubeConfig, path, list: () => core.listNamespacedConfigMap({ namespace: NS }), clock: realClock, logger: silentLogger(),
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

    // outage: the watch fails with 500 and the next two lists fail too
    srv.injectFailure({ path, watch: true, code: 500, times: 1 });
    srv.injectFailure({ path, watch: false, method: 'GET', code: 503, times: 2 });
    srv.dropWatches();
    await waitFor('first restart scheduled', () => restarts.length >= 1);
    // while it is down, one object is deleted and one created; a watch resuming would need history,
    // which compaction removed
    await srv.delete('v1', 'ConfigMap', 'doomed', NS);
    await cm('fresh');
    srv.compact({ keepWatches: true });
    await waitFor('recovered', () => inf.get('fresh', NS) !== undefined && inf.get('doomed', NS) === undefined);
    expect(seen.del).toContain('doomed');
    expect(restarts.length).toBeGreaterThanOrEqual(2); // the failed lists were retried
    expect(restarts[1]).toBeGreaterThanOrEqual(restarts[0]! / 2); // backoff does not shrink below the jitter floor
    expect(inf.restarts).toBeGreaterThanOrEqual(2);
    expect(inf.error).toBeUndefined();

    // and it keeps watching afterwards
    await cm('later');
    await waitFor('watch after recovery', () => inf.get('later', NS) !== undefined);
    await inf.stop();
  });
});

describe('ResilientInformer errors', () => {
  it('a resource that is not served (CRD missing) keeps retrying and says what is wrong', async () => {
    const path = '/apis/nothere.example/v1/widgets';
    const inf = new ResilientInformer({
      kubeConfig: srv.kubeConfig, path, clock: realClock, logger: silentLogger(), name: 'widgets', backoffBaseMs: 20, backoffMaxMs: 50,
      list: async () => {
        const r = await fetch(`${srv.url}${path}`, { headers: { Authorization: `Bearer ${srv.token}` } });
        if (!r.ok) throw Object.assign(new Error(`list failed: HTTP ${r.status}`), { statusCode: r.status });
        return (await r.json()) as never;
      },
    });
    await inf.start();
    await waitFor('two attempts', () => inf.restarts >= 2);
    expect(inf.synced).toBe(false);
    expect(inf.error).toMatch(/404: \/apis\/nothere\.example\/v1\/widgets is not served; is its CustomResourceDefinition installed\?/);
    await inf.stop();
  });
});

describe('EventRecorder', () => {
  it('creates a core/v1 Event with involvedObject, then aggregates repeats into count/lastTimestamp', async () => {
    const clock = new FakeClock(Date.parse('2026-03-01T10:00:00Z'));
    const rec = new EventRecorder({ sink: kubeEventSink(srv.kubeConfig), clock, logger: silentLogger(), component: 'lockmig-controller', instance: 'r1' });
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
