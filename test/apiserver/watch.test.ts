/**
 * List/watch behaviour seen through client-node's own Watch and makeInformer/ListWatch: events, selectors,
 * bookmarks, resourceVersion replay, 410 Gone after compaction (and the informer's relist), injected failures
 * (which stop a client-node informer: it only restarts by itself on 410) and a clean shutdown.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  ADD, CoreV1Api, CustomObjectsApi, DELETE, ERROR, UPDATE, Watch, makeInformer, type V1ConfigMap, type Informer,
} from '@kubernetes/client-node';
import { startFakeApiServer, type FakeApiServer } from '../support/apiserver/index.js';

const WIDGETS = new URL('./fixtures/widgets.example.dev.yaml', import.meta.url).pathname;

async function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = 3000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

let srv: FakeApiServer;
let core: CoreV1Api;
const informers: Informer<any>[] = [];
const aborts: AbortController[] = [];

beforeAll(async () => {
  srv = await startFakeApiServer({ crds: [WIDGETS], bookmarkIntervalMs: 50 });
  core = srv.kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: 'w' } } });
});
afterEach(async () => {
  for (const i of informers.splice(0)) await i.stop();
  for (const a of aborts.splice(0)) a.abort();
});
afterAll(async () => { await srv?.close(); });

function cm(name: string, labels: Record<string, string> = {}, data: Record<string, string> = {}): V1ConfigMap {
  return { metadata: { name, labels }, data };
}

/** An informer over configmaps in `ns` that records what it sees. */
function recorder(ns: string, labelSelector?: string) {
  const seen: string[] = [];
  const errors: unknown[] = [];
  const inf = makeInformer(srv.kubeConfig, `/api/v1/namespaces/${ns}/configmaps`,
    () => core.listNamespacedConfigMap({ namespace: ns, labelSelector }), labelSelector);
  inf.on(ADD, (o) => seen.push(`add:${o.metadata!.name}`));
  inf.on(UPDATE, (o) => seen.push(`update:${o.metadata!.name}:${o.data?.v ?? ''}`));
  inf.on(DELETE, (o) => seen.push(`delete:${o.metadata!.name}`));
  inf.on(ERROR, (e) => errors.push(e));
  informers.push(inf);
  return { inf, seen, errors };
}

describe('informer', () => {
  it('receives ADD, UPDATE and DELETE', async () => {
    await core.createNamespace({ body: { metadata: { name: 'inf1' } } });
    await core.createNamespacedConfigMap({ namespace: 'inf1', body: cm('before') });
    const { inf, seen } = recorder('inf1');
    await inf.start();
    await waitFor('initial list', () => seen.includes('add:before'));
    await core.createNamespacedConfigMap({ namespace: 'inf1', body: cm('c1') });
    await core.patchNamespacedConfigMap({ name: 'c1', namespace: 'inf1', body: [{ op: 'add', path: '/data', value: { v: '2' } }] });
    await core.deleteNamespacedConfigMap({ name: 'c1', namespace: 'inf1' });
    await waitFor('events', () => seen.includes('delete:c1'));
    expect(seen).toEqual(['add:before', 'add:c1', 'update:c1:2', 'delete:c1']);
    expect(inf.list('inf1').map((o) => o.metadata!.name)).toEqual(['before']);
  });

  it('sees objects enter and leave a label selector', async () => {
    await core.createNamespace({ body: { metadata: { name: 'inf2' } } });
    const { inf, seen } = recorder('inf2', 'tier in (web),!skip');
    await inf.start();
    await core.createNamespacedConfigMap({ namespace: 'inf2', body: cm('other', { tier: 'db' }) });
    await core.createNamespacedConfigMap({ namespace: 'inf2', body: cm('web1', { tier: 'web' }) });
    await core.patchNamespacedConfigMap({ name: 'web1', namespace: 'inf2', body: [{ op: 'add', path: '/metadata/labels/skip', value: '' }] });
    await core.patchNamespacedConfigMap({ name: 'other', namespace: 'inf2', body: [{ op: 'replace', path: '/metadata/labels/tier', value: 'web' }] });
    await waitFor('selector events', () => seen.length >= 3);
    expect(seen).toEqual(['add:web1', 'delete:web1', 'add:other']);
  });

  it('relists after compaction answers 410 Gone', async () => {
    await core.createNamespace({ body: { metadata: { name: 'inf3' } } });
    await core.createNamespacedConfigMap({ namespace: 'inf3', body: cm('a') });
    const { inf, seen, errors } = recorder('inf3');
    await inf.start();
    await waitFor('initial', () => seen.includes('add:a'));
    const listsBefore = srv.requests.filter((r) => r.path === '/api/v1/namespaces/inf3/configmaps' && !r.watch).length;
    srv.compact(); // open watches get an ERROR event with a 410 Status, then the stream ends
    await waitFor('relist', () => srv.requests.filter((r) => r.path === '/api/v1/namespaces/inf3/configmaps' && !r.watch).length > listsBefore);
    await core.createNamespacedConfigMap({ namespace: 'inf3', body: cm('b') });
    await waitFor('event after relist', () => seen.includes('add:b'));
    expect(errors).toEqual([]);
    expect(seen).toEqual(['add:a', 'add:b']);
  });

  it('stops on any other watch error (client-node behaviour) and works again after start()', async () => {
    await core.createNamespace({ body: { metadata: { name: 'inf4' } } });
    const { inf, seen, errors } = recorder('inf4');
    await inf.start();
    await waitFor('watch open', () => srv.requests.some((r) => r.watch && r.path.includes('/inf4/')));
    srv.injectFailure({ watch: true, path: '/inf4/', code: 500 });
    srv.dropWatches(); // the informer reconnects from its resourceVersion and meets the injected 500
    await waitFor('error reported', () => errors.length > 0);
    expect((errors[0] as { statusCode?: number }).statusCode).toBe(500);
    await core.createNamespacedConfigMap({ namespace: 'inf4', body: cm('missed') });
    await new Promise((r) => setTimeout(r, 100));
    expect(seen).toEqual([]); // stopped: nothing arrives until restarted
    await inf.start();
    await waitFor('after restart', () => seen.includes('add:missed'));
  });

  it('resumes from its resourceVersion after a clean disconnect without relisting', async () => {
    await core.createNamespace({ body: { metadata: { name: 'inf5' } } });
    const { inf, seen } = recorder('inf5');
    await inf.start();
    await waitFor('watch open', () => srv.requests.some((r) => r.watch && r.path.includes('/inf5/')));
    srv.dropWatches();
    await core.createNamespacedConfigMap({ namespace: 'inf5', body: cm('during-gap') });
    await waitFor('replayed', () => seen.includes('add:during-gap'));
    const reqs = srv.requests.filter((r) => r.path.includes('/inf5/'));
    expect(reqs.filter((r) => r.method === 'GET' && !r.watch)).toHaveLength(1);
    expect(reqs.filter((r) => r.watch).length).toBeGreaterThanOrEqual(2);
    expect(reqs.filter((r) => r.watch).at(-1)!.query.resourceVersion).toMatch(/^\d+$/);
  });
});

describe('raw watch', () => {
  async function watchEvents(path: string, query: Record<string, string | number | boolean | undefined>) {
    const events: { type: string; object: any }[] = [];
    let ended: unknown = 'open';
    const ctrl = await new Watch(srv.kubeConfig).watch(path, query, (type, object) => events.push({ type, object }),
      (err) => { ended = err; });
    aborts.push(ctrl);
    return { events, ended: () => ended };
  }

  it('sends periodic BOOKMARKs carrying the current resourceVersion', async () => {
    const w = await watchEvents('/api/v1/namespaces/w/configmaps', { allowWatchBookmarks: true, resourceVersion: srv.resourceVersion() });
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('bm') });
    const bm = await waitFor('bookmark', () => w.events.find((e) => e.type === 'BOOKMARK'));
    expect(bm.object).toEqual({ kind: 'ConfigMap', apiVersion: 'v1', metadata: { resourceVersion: srv.resourceVersion() } });
    expect(w.events[0]).toMatchObject({ type: 'ADDED', object: { kind: 'ConfigMap', metadata: { name: 'bm' } } });
  });

  it('serves the legacy /watch/ paths and watches of a single object', async () => {
    const legacy = await fetch(`${srv.url}/api/v1/watch/namespaces/w/configmaps?timeoutSeconds=1`, { headers: { authorization: `Bearer ${srv.token}` } });
    const one = await watchEvents('/api/v1/namespaces/w/configmaps', { fieldSelector: 'metadata.name=single' });
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('single') });
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('not-this-one') });
    const lines = (await legacy.text()).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.type === 'ADDED').map((l) => l.object.metadata.name)).toEqual(
      expect.arrayContaining(['single', 'not-this-one']));
    await waitFor('single', () => one.events.length > 0);
    expect(one.events.map((e) => e.object.metadata.name)).toEqual(['single']);
  });

  it('gets no bookmarks through client-node\'s informer, which never asks for them (an idle informer falls behind)', async () => {
    await core.createNamespace({ body: { metadata: { name: 'quiet' } } });
    const { inf } = recorder('quiet');
    await inf.start();
    await waitFor('watch open', () => srv.requests.some((r) => r.watch && r.path.includes('/quiet/')));
    const atStart = (inf as unknown as { latestResourceVersion(): string }).latestResourceVersion();
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('elsewhere') });
    await new Promise((r) => setTimeout(r, 200)); // four bookmark intervals
    const watchReq = srv.requests.find((r) => r.watch && r.path.includes('/quiet/'))!;
    expect(watchReq.query.allowWatchBookmarks).toBeUndefined();
    expect((inf as unknown as { latestResourceVersion(): string }).latestResourceVersion()).toBe(atStart);
  });

  it('replays history from a resourceVersion and answers 410 for a compacted one', async () => {
    const rv = srv.resourceVersion();
    await core.createNamespacedConfigMap({ namespace: 'w', body: cm('r1') });
    await core.deleteNamespacedConfigMap({ name: 'r1', namespace: 'w' });
    const replay = await watchEvents('/api/v1/namespaces/w/configmaps', { resourceVersion: rv });
    await waitFor('replay', () => replay.events.length >= 2);
    expect(replay.events.map((e) => `${e.type}:${e.object.metadata.name}`)).toEqual(['ADDED:r1', 'DELETED:r1']);
    srv.compact({ keepWatches: true });
    const old = await watchEvents('/api/v1/namespaces/w/configmaps', { resourceVersion: rv });
    await waitFor('end', () => old.ended() !== 'open');
    expect(old.events).toHaveLength(1);
    expect(old.events[0]!.type).toBe('ERROR');
    expect(old.events[0]!.object).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Expired', code: 410 });
    expect(old.events[0]!.object.message).toMatch(/^too old resource version: \d+ \(\d+\)$/);
    const list = await fetch(`${srv.url}/api/v1/namespaces/w/configmaps?resourceVersion=${rv}&resourceVersionMatch=Exact`,
      { headers: { authorization: `Bearer ${srv.token}` } });
    expect(list.status).toBe(410);
    expect(await list.json()).toMatchObject({ reason: 'Expired', message: 'The resourceVersion for the provided list is too old.' });
  });

  it('ends on timeoutSeconds and filters by field selector on custom resources', async () => {
    const w = await watchEvents('/apis/example.dev/v1alpha1/namespaces/w/widgets', { fieldSelector: 'spec.color=blue', timeoutSeconds: 1 });
    const custom = srv.kubeConfig.makeApiClient(CustomObjectsApi);
    for (const color of ['red', 'blue']) {
      await custom.createNamespacedCustomObject({ group: 'example.dev', version: 'v1alpha1', plural: 'widgets', namespace: 'w', body: {
        apiVersion: 'example.dev/v1alpha1', kind: 'Widget', metadata: { name: `w-${color}` }, spec: { sourcePodName: 'p', color } } });
    }
    await waitFor('timeout end', () => w.ended() !== 'open', 3000);
    expect(w.ended()).toBeNull();
    expect(w.events.map((e) => e.object.metadata.name)).toEqual(['w-blue']);
  });
});

describe('list', () => {
  it('pages with limit/continue over a consistent snapshot', async () => {
    await core.createNamespace({ body: { metadata: { name: 'pages' } } });
    for (const n of ['a', 'b', 'c', 'd', 'e']) await core.createNamespacedConfigMap({ namespace: 'pages', body: cm(n) });
    const p1 = await core.listNamespacedConfigMap({ namespace: 'pages', limit: 2 });
    expect(p1.items.map((i) => i.metadata!.name)).toEqual(['a', 'b']);
    expect(p1.metadata?.remainingItemCount).toBe(3);
    await core.deleteNamespacedConfigMap({ name: 'c', namespace: 'pages' });
    const p2 = await core.listNamespacedConfigMap({ namespace: 'pages', limit: 2, _continue: p1.metadata!._continue });
    expect(p2.items.map((i) => i.metadata!.name)).toEqual(['c', 'd']);
    expect(p2.metadata?.resourceVersion).toBe(p1.metadata?.resourceVersion);
    const p3 = await core.listNamespacedConfigMap({ namespace: 'pages', limit: 2, _continue: p2.metadata!._continue });
    expect(p3.items.map((i) => i.metadata!.name)).toEqual(['e']);
    expect(p3.metadata?._continue).toBeUndefined();
  });

  it('supports set-based selectors and rejects unknown field selectors', async () => {
    await core.createNamespace({ body: { metadata: { name: 'sel' } } });
    await core.createNamespacedConfigMap({ namespace: 'sel', body: cm('x', { env: 'prod', team: 'a' }) });
    await core.createNamespacedConfigMap({ namespace: 'sel', body: cm('y', { env: 'dev' }) });
    await core.createNamespacedConfigMap({ namespace: 'sel', body: cm('z', {}) });
    const names = async (labelSelector: string) =>
      (await core.listNamespacedConfigMap({ namespace: 'sel', labelSelector })).items.map((i) => i.metadata!.name);
    expect(await names('env=prod')).toEqual(['x']);
    expect(await names('env==prod')).toEqual(['x']);
    expect(await names('env!=prod')).toEqual(['y', 'z']);
    expect(await names('env in (prod,dev)')).toEqual(['x', 'y']);
    expect(await names('env notin (prod)')).toEqual(['y', 'z']);
    expect(await names('team')).toEqual(['x']);
    expect(await names('!team')).toEqual(['y', 'z']);
    const byName = await core.listNamespacedConfigMap({ namespace: 'sel', fieldSelector: 'metadata.name!=x,metadata.namespace=sel' });
    expect(byName.items.map((i) => i.metadata!.name)).toEqual(['y', 'z']);
    await expect(core.listNamespacedConfigMap({ namespace: 'sel', fieldSelector: 'data.k=v' })).rejects.toMatchObject({ code: 400 });
  });
});

describe('injected failures', () => {
  it('fails the next N matching requests with a Status', async () => {
    const h = srv.injectFailure({ method: 'GET', path: '/namespaces/w/configmaps/x', code: 503, times: 2 });
    await expect(core.readNamespacedConfigMap({ name: 'x', namespace: 'w' })).rejects.toMatchObject({ code: 503 });
    await expect(core.readNamespacedConfigMap({ name: 'x', namespace: 'w' })).rejects.toMatchObject({ code: 503 });
    await expect(core.readNamespacedConfigMap({ name: 'x', namespace: 'w' })).rejects.toMatchObject({ code: 404 });
    expect(h.remaining).toBe(0);
  });
});

describe('bounded history (compactAfter)', () => {
  it('answers 410 for resourceVersions that fell out of the last N events, and replays the rest', async () => {
    const own = await startFakeApiServer({ compactAfter: 3 });
    try {
      const c = own.kubeConfig.makeApiClient(CoreV1Api);
      const first = own.resourceVersion();
      for (const n of ['h1', 'h2', 'h3', 'h4']) await c.createNamespacedConfigMap({ namespace: 'default', body: cm(n) });
      const recent = String(Number(own.resourceVersion()) - 2);
      const read = async (rv: string) => {
        const r = await fetch(`${own.url}/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1&resourceVersion=${rv}`);
        return (await r.text()).trim().split('\n').map((l) => JSON.parse(l));
      };
      const old = await read(first);
      expect(old).toHaveLength(1);
      expect(old[0]).toMatchObject({ type: 'ERROR', object: { code: 410, reason: 'Expired' } });
      const ok = await read(recent);
      expect(ok.map((e) => `${e.type}:${e.object.metadata.name}`)).toEqual(['ADDED:h3', 'ADDED:h4']);
    } finally {
      await own.close();
    }
  });
});

describe('shutdown', () => {
  it('close() ends open watches promptly and the informer reports the lost server', async () => {
    const own = await startFakeApiServer();
    const ownCore = own.kubeConfig.makeApiClient(CoreV1Api);
    const errors: unknown[] = [];
    const inf = makeInformer(own.kubeConfig, '/api/v1/namespaces/default/configmaps', () => ownCore.listNamespacedConfigMap({ namespace: 'default' }));
    inf.on(ERROR, (e) => errors.push(e));
    await inf.start();
    const w = new Watch(own.kubeConfig);
    let rawEnded: unknown = 'open';
    await w.watch('/api/v1/pods', { allowWatchBookmarks: true }, () => undefined, (e) => { rawEnded = e; });
    await waitFor('two watches', () => own.activeWatches() === 2);
    const t0 = Date.now();
    await own.close();
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(own.activeWatches()).toBe(0);
    await waitFor('raw watch done', () => rawEnded !== 'open');
    await waitFor('informer error', () => errors.length > 0); // it reconnects, finds nothing listening, and stops
    expect(String((errors[0] as Error).message ?? errors[0])).toMatch(/ECONNREFUSED|socket hang up|ECONNRESET/);
    await inf.stop();
  });
});
