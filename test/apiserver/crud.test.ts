/**
 * The fake API server driven only through @kubernetes/client-node 1.4: CRUD, status subresource,
 * optimistic concurrency, finalizers, every patch type and error shapes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ApiException, ApiextensionsV1Api, AppsV1Api, CoordinationV1Api, Watch, CoreV1Api, CustomObjectsApi, EventsV1Api, KubernetesObjectApi, PatchStrategy,
  VersionApi, setHeaderOptions, type V1Pod,
} from '@kubernetes/client-node';
import fs from 'node:fs';
import YAML from 'yaml';
import { startFakeApiServer, type FakeApiServer } from '../support/apiserver/index.js';

const WIDGETS = new URL('./fixtures/widgets.example.dev.yaml', import.meta.url).pathname;
const W = { group: 'example.dev', version: 'v1alpha1', plural: 'widgets' } as const;

/** The Status object of a failed call (client-node keeps the body as text). */
async function failure(p: Promise<unknown>): Promise<{ code: number; status: Record<string, any> }> {
  try {
    await p;
  } catch (e) {
    if (!(e instanceof ApiException)) throw e;
    return { code: e.code, status: typeof e.body === 'string' ? JSON.parse(e.body) : e.body };
  }
  throw new Error('expected the call to fail');
}

function pod(name: string, labels: Record<string, string> = {}): V1Pod {
  return { metadata: { name, labels }, spec: { containers: [{ name: 'app', image: 'busybox:1.36' }] } };
}

let srv: FakeApiServer;
let core: CoreV1Api;
let custom: CustomObjectsApi;

beforeAll(async () => {
  srv = await startFakeApiServer({ crds: [WIDGETS] });
  core = srv.kubeConfig.makeApiClient(CoreV1Api);
  custom = srv.kubeConfig.makeApiClient(CustomObjectsApi);
  await core.createNamespace({ body: { metadata: { name: 'crud' } } });
});
afterAll(async () => { await srv?.close(); });

describe('core objects', () => {
  it('creates with server-assigned metadata and reads it back', async () => {
    const created = await core.createNamespacedPod({ namespace: 'crud', body: pod('p1') });
    expect(created.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.metadata?.resourceVersion).toMatch(/^\d+$/);
    expect(created.metadata?.creationTimestamp).toBeInstanceOf(Date);
    expect(created.status?.phase).toBe('Pending');
    const read = await core.readNamespacedPod({ name: 'p1', namespace: 'crud' });
    expect(read.metadata?.uid).toBe(created.metadata?.uid);
    expect(read.spec?.containers[0]?.imagePullPolicy).toBe('IfNotPresent');
  });

  it('answers 409 AlreadyExists and 404 NotFound with real Status bodies', async () => {
    const dup = await failure(core.createNamespacedPod({ namespace: 'crud', body: pod('p1') }));
    expect(dup.code).toBe(409);
    expect(dup.status).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'AlreadyExists', code: 409,
      message: 'pods "p1" already exists', details: { name: 'p1', kind: 'pods' } });
    const nf = await failure(core.readNamespacedPod({ name: 'nope', namespace: 'crud' }));
    expect(nf.status).toMatchObject({ reason: 'NotFound', code: 404, message: 'pods "nope" not found' });
    const nsMissing = await failure(core.createNamespacedConfigMap({ namespace: 'ghost', body: { metadata: { name: 'c' } } }));
    expect(nsMissing.status.message).toBe('namespaces "ghost" not found');
  });

  it('rejects a stale resourceVersion with 409 Conflict', async () => {
    const cm = await core.createNamespacedConfigMap({ namespace: 'crud', body: { metadata: { name: 'cfg' }, data: { a: '1' } } });
    const v1 = await core.replaceNamespacedConfigMap({ name: 'cfg', namespace: 'crud', body: { ...cm, data: { a: '2' } } });
    expect(Number(v1.metadata!.resourceVersion)).toBeGreaterThan(Number(cm.metadata!.resourceVersion));
    const stale = await failure(core.replaceNamespacedConfigMap({ name: 'cfg', namespace: 'crud', body: { ...cm, data: { a: '3' } } }));
    expect(stale.code).toBe(409);
    expect(stale.status).toMatchObject({
      reason: 'Conflict',
      message: 'Operation cannot be fulfilled on configmaps "cfg": the object has been modified; please apply your changes to the latest version and try again',
      details: { name: 'cfg', kind: 'configmaps' },
    });
  });

  it('serialises concurrent writes: no lost patch, exactly one winner among PUTs of the same version', async () => {
    const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
    await core.createNamespacedConfigMap({ namespace: 'crud', body: { metadata: { name: 'race' } } });
    await Promise.all(Array.from({ length: 20 }, (_, i) =>
      core.patchNamespacedConfigMap({ name: 'race', namespace: 'crud', body: { data: { [`k${i}`]: String(i) } } }, merge)));
    const after = await core.readNamespacedConfigMap({ name: 'race', namespace: 'crud' });
    expect(Object.keys(after.data ?? {})).toHaveLength(20);
    const results = await Promise.allSettled(Array.from({ length: 5 }, (_, i) =>
      core.replaceNamespacedConfigMap({ name: 'race', namespace: 'crud', body: { ...after, data: { winner: String(i) } } })));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason.code)).toEqual([409, 409, 409, 409]);
  });

  it('keeps status out of main writes and spec out of status writes', async () => {
    const p = await core.readNamespacedPod({ name: 'p1', namespace: 'crud' });
    const st = await core.replaceNamespacedPodStatus({ name: 'p1', namespace: 'crud',
      body: { ...p, metadata: { ...p.metadata, labels: { sneaky: 'yes' } }, status: { phase: 'Running', podIP: '10.0.0.5' } } });
    expect(st.status?.phase).toBe('Running');
    expect(st.metadata?.labels?.sneaky).toBeUndefined();
    const main = await core.patchNamespacedPod({ name: 'p1', namespace: 'crud', body: { metadata: { labels: { a: 'b' } }, status: { phase: 'Failed' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    expect(main.metadata?.labels?.a).toBe('b');
    expect(main.status?.phase).toBe('Running');
  });

  it('forbids changing an existing pod spec except images', async () => {
    const bad = await failure(core.patchNamespacedPod({ name: 'p1', namespace: 'crud', body: { spec: { nodeName: 'elsewhere' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch)));
    expect(bad.code).toBe(422);
    expect(bad.status.message).toContain('Pod "p1" is invalid: spec: Forbidden: pod updates may not change fields');
  });
});

describe('patch content types', () => {
  it('uses JSON patch by default (client-node 1.4) including the test op', async () => {
    const p = await core.readNamespacedPod({ name: 'p1', namespace: 'crud' });
    const ok = await core.patchNamespacedPod({ name: 'p1', namespace: 'crud', body: [
      { op: 'test', path: '/metadata/resourceVersion', value: p.metadata!.resourceVersion },
      { op: 'add', path: '/metadata/annotations', value: { 'x/y': 'z' } },
    ] });
    expect(ok.metadata?.annotations?.['x/y']).toBe('z');
    expect(srv.requests.at(-1)?.contentType).toBe('application/json-patch+json');
    const failed = await failure(core.patchNamespacedPod({ name: 'p1', namespace: 'crud', body: [
      { op: 'test', path: '/metadata/resourceVersion', value: p.metadata!.resourceVersion },
    ] }));
    expect(failed.code).toBe(422);
    expect(JSON.stringify(failed.status)).toContain('test operation failed');
  });

  it('merges strategically by container name and honours $patch: delete', async () => {
    const apps = srv.kubeConfig.makeApiClient(AppsV1Api);
    const tmpl = { metadata: { labels: { app: 'd' } }, spec: { containers: [
      { name: 'a', image: 'img:1', env: [{ name: 'X', value: '1' }, { name: 'Y', value: '2' }] }, { name: 'b', image: 'img:1' }] } };
    await apps.createNamespacedDeployment({ namespace: 'crud', body: {
      metadata: { name: 'smp' }, spec: { selector: { matchLabels: { app: 'd' } }, template: tmpl } } });
    const out = await apps.patchNamespacedDeployment({ name: 'smp', namespace: 'crud', body: {
      spec: { template: { spec: { containers: [{ name: 'b', image: 'img:2' }, { name: 'a', env: [{ name: 'Y', $patch: 'delete' }, { name: 'Z', value: '3' }] }] } } },
    } }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch));
    const [a, b] = out.spec!.template.spec!.containers;
    expect(a!.image).toBe('img:1');
    expect(a!.env).toEqual([{ name: 'X', value: '1' }, { name: 'Z', value: '3' }]);
    expect(b!.image).toBe('img:2');
    expect(out.metadata?.generation).toBe(2);
  });

  it('applies server-side apply as a merge and requires a field manager', async () => {
    const applied = await core.patchNamespacedConfigMap({ name: 'ssa', namespace: 'crud', fieldManager: 'test', body: {
      apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'ssa' }, data: { k: 'v' } } },
    setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply));
    expect(applied.data).toEqual({ k: 'v' });
    const noManager = await failure(core.patchNamespacedConfigMap({ name: 'ssa', namespace: 'crud', body: { data: { k: 'w' } } },
      setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply)));
    expect(noManager.code).toBe(422);
    expect(noManager.status.message).toContain('fieldManager: Required value');
  });

  it('refuses strategic merge patch on custom resources with 415', async () => {
    await custom.createNamespacedCustomObject({ ...W, namespace: 'crud', body: {
      apiVersion: 'example.dev/v1alpha1', kind: 'Widget', metadata: { name: 'w-smp' }, spec: { sourcePodName: 'p1' } } });
    const r = await failure(custom.patchNamespacedCustomObject({ ...W, namespace: 'crud', name: 'w-smp', body: { metadata: { labels: { a: 'b' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch)));
    expect(r.code).toBe(415);
    expect(r.status.reason).toBe('UnsupportedMediaType');
  });
});

describe('custom resources', () => {
  it('defaults, prunes with a warning and bumps generation only on spec changes', async () => {
    const w = await custom.createNamespacedCustomObject({ ...W, namespace: 'crud', body: {
      apiVersion: 'example.dev/v1alpha1', kind: 'Widget', metadata: { name: 'w1' },
      spec: { sourcePodName: 'p1', storage: { nodeLocal: {} }, bogus: 1, extra: { kept: true } },
      status: { phase: 'Ignored' } } }) as any;
    expect(w.spec.color).toBe('red');
    expect(w.spec.restore).toEqual({ mode: 'Auto', timeoutSeconds: 30 });
    expect(w.spec.storage.nodeLocal.path).toBe('/var/lib/lockmig');
    expect(w.spec.bogus).toBeUndefined();
    expect(w.spec.extra).toEqual({ kept: true });
    expect(w.status).toBeUndefined();
    expect(w.metadata.generation).toBe(1);
    const s = await custom.patchNamespacedCustomObjectStatus({ ...W, namespace: 'crud', name: 'w1', body: { status: { phase: 'Dumping' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch)) as any;
    expect(s.status.phase).toBe('Dumping');
    expect(s.metadata.generation).toBe(1);
    const l = await custom.patchNamespacedCustomObject({ ...W, namespace: 'crud', name: 'w1', body: { metadata: { labels: { x: 'y' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch)) as any;
    expect(l.metadata.generation).toBe(1);
    expect(l.status.phase).toBe('Dumping');
  });

  it('warns about pruned fields, or refuses them under fieldValidation=Strict', async () => {
    const body = JSON.stringify({ apiVersion: 'example.dev/v1alpha1', kind: 'Widget', metadata: { name: 'strict' }, spec: { sourcePodName: 'p', bogus: 1 } });
    const post = (q: string) => fetch(`${srv.url}/apis/example.dev/v1alpha1/namespaces/crud/widgets${q}`,
      { method: 'POST', body, headers: { 'content-type': 'application/json', authorization: `Bearer ${srv.token}` } });
    const strict = await post('?fieldValidation=Strict');
    expect(strict.status).toBe(400);
    expect(((await strict.json()) as { message: string }).message).toBe('Widget in version "v1alpha1" cannot be handled as a Widget: strict decoding error: unknown field "spec.bogus"');
    const warn = await post('');
    expect(warn.status).toBe(201);
    expect(warn.headers.get('warning')).toBe('299 - "unknown field \\"spec.bogus\\""');
  });

  it('enforces immutability through the CEL rule self == oldSelf', async () => {
    const r = await failure(custom.patchNamespacedCustomObject({ ...W, namespace: 'crud', name: 'w1', body: { spec: { color: 'blue' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch)));
    expect(r.code).toBe(422);
    expect(r.status.message).toBe('Widget.example.dev "w1" is invalid: spec: Invalid value: "object": spec is immutable');
    expect(r.status.details.causes).toEqual([{ reason: 'FieldValueInvalid', message: 'Invalid value: "object": spec is immutable', field: 'spec' }]);
  });

  it('reports schema violations like the real server', async () => {
    const r = await failure(custom.createNamespacedCustomObject({ ...W, namespace: 'crud', body: {
      apiVersion: 'example.dev/v1alpha1', kind: 'Widget', metadata: { name: 'bad' },
      spec: { color: 'pink', replicas: 0, port: 1.5, tags: ['a', 'a'], storage: { nodeLocal: {}, persistentVolumeClaim: { claimName: 'c' } } } } }));
    expect(r.code).toBe(422);
    const msg: string = r.status.message;
    expect(msg).toMatch(/^Widget\.example\.dev "bad" is invalid: \[/);
    expect(msg).toContain('spec.sourcePodName: Required value');
    expect(msg).toContain('spec.color: Unsupported value: "pink": supported values: "red", "green", "blue"');
    expect(msg).toContain('spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1');
    expect(msg).toContain('spec.port: Invalid value: 1.5: spec.port in body must be of type integer,string: "number"');
    expect(msg).toContain('spec.tags[1]: Duplicate value: "a"');
    expect(msg).toContain('spec.storage: Invalid value: "object": exactly one of nodeLocal or persistentVolumeClaim must be set');
    expect(r.status.details.causes).toContainEqual({ reason: 'FieldValueRequired', message: 'Required value', field: 'spec.sourcePodName' });
  });

  it('skips CEL it cannot evaluate and says so', async () => {
    await custom.createNamespacedCustomObject({ ...W, namespace: 'crud', body: {
      apiVersion: 'example.dev/v1alpha1', kind: 'Widget', metadata: { name: 'w-cel' }, spec: { sourcePodName: 'p', unsupported: 'MiXeD' } } });
    expect(srv.celWarnings.map((w) => w.rule)).toContain('self.lowerAscii() == self');
  });

  it('requires resourceVersion on PUT of a custom resource', async () => {
    const cur = await custom.getNamespacedCustomObject({ ...W, namespace: 'crud', name: 'w1' }) as any;
    delete cur.metadata.resourceVersion;
    const r = await failure(custom.replaceNamespacedCustomObject({ ...W, namespace: 'crud', name: 'w1', body: cur }));
    expect(r.code).toBe(422);
    expect(r.status.message).toBe('Widget.example.dev "w1" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update');
  });
});

describe('finalizers', () => {
  it('answers a completed delete with a Success Status (the object for pods)', async () => {
    await core.createNamespacedConfigMap({ namespace: 'crud', body: { metadata: { name: 'del' } } });
    const st = await core.deleteNamespacedConfigMap({ name: 'del', namespace: 'crud' });
    expect(st).toMatchObject({ kind: 'Status', status: 'Success', details: { name: 'del', kind: 'configmaps' } });
    const p = await core.deleteNamespacedPod({ name: 'p1', namespace: 'crud' });
    expect(p.metadata?.name).toBe('p1');
    expect(p.kind).toBe('Pod');
  });

  it('marks for deletion, then deletes when the last finalizer goes', async () => {
    await custom.createNamespacedCustomObject({ ...W, namespace: 'crud', body: {
      apiVersion: 'example.dev/v1alpha1', kind: 'Widget', metadata: { name: 'fin', finalizers: ['example.dev/cleanup'] }, spec: { sourcePodName: 'p' } } });
    const marked = await custom.deleteNamespacedCustomObject({ ...W, namespace: 'crud', name: 'fin' }) as any;
    expect(marked.metadata.deletionTimestamp).toBeTruthy();
    expect(srv.requests.at(-1)).toMatchObject({ method: 'DELETE', status: 202 });
    const still = await custom.getNamespacedCustomObject({ ...W, namespace: 'crud', name: 'fin' }) as any;
    expect(still.metadata.deletionTimestamp).toBe(marked.metadata.deletionTimestamp);
    const add = await failure(custom.patchNamespacedCustomObject({ ...W, namespace: 'crud', name: 'fin',
      body: [{ op: 'add', path: '/metadata/finalizers/-', value: 'example.dev/more' }] }));
    expect(add.status.message).toContain('no new finalizers can be added if the object is being deleted');
    await custom.patchNamespacedCustomObject({ ...W, namespace: 'crud', name: 'fin',
      body: [{ op: 'remove', path: '/metadata/finalizers/0' }] });
    const gone = await failure(custom.getNamespacedCustomObject({ ...W, namespace: 'crud', name: 'fin' }));
    expect(gone.code).toBe(404);
    expect(gone.status.message).toBe('widgets.example.dev "fin" not found');
  });
});

describe('other clients', () => {
  it('serves discovery to KubernetesObjectApi', async () => {
    const objs = KubernetesObjectApi.makeApiClient(srv.kubeConfig);
    const created = await objs.create({ apiVersion: 'example.dev/v1alpha1', kind: 'Widget', metadata: { name: 'via-object-api', namespace: 'crud' },
      spec: { sourcePodName: 'p' } } as any);
    expect(created.metadata?.uid).toBeTruthy();
    const lease = await objs.create({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'l', namespace: 'crud' },
      spec: { holderIdentity: 'me', leaseDurationSeconds: 15 } } as any);
    expect(lease.kind).toBe('Lease');
    const v = await srv.kubeConfig.makeApiClient(VersionApi).getCode();
    expect(v.major).toBe('1');
  });

  it('handles leases and events.k8s.io events', async () => {
    const coord = srv.kubeConfig.makeApiClient(CoordinationV1Api);
    const l = await coord.createNamespacedLease({ namespace: 'crud', body: { metadata: { name: 'leader' }, spec: { holderIdentity: 'a', leaseDurationSeconds: 10 } } });
    const l2 = await coord.replaceNamespacedLease({ name: 'leader', namespace: 'crud', body: { ...l, spec: { ...l.spec, holderIdentity: 'b' } } });
    expect(l2.spec?.holderIdentity).toBe('b');
    const stale = await failure(coord.replaceNamespacedLease({ name: 'leader', namespace: 'crud', body: { ...l, spec: { ...l.spec, holderIdentity: 'c' } } }));
    expect(stale.code).toBe(409);
    // leases: PUT may create (AllowCreateOnUpdate) but never updates without a resourceVersion (AllowUnconditionalUpdate=false)
    const putCreated = await coord.replaceNamespacedLease({ name: 'by-put', namespace: 'crud', body: { metadata: { name: 'by-put' }, spec: { holderIdentity: 'x' } } });
    expect(putCreated.metadata?.uid).toBeTruthy();
    const blind = await failure(coord.replaceNamespacedLease({ name: 'by-put', namespace: 'crud', body: { metadata: { name: 'by-put' }, spec: { holderIdentity: 'y' } } }));
    expect(blind.status.message).toBe('Lease.coordination.k8s.io "by-put" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update');
    const ev = srv.kubeConfig.makeApiClient(EventsV1Api);
    await ev.createNamespacedEvent({ namespace: 'crud', body: { metadata: { generateName: 'w1.' }, eventTime: new Date() as any,
      reason: 'Dumped', note: 'done', type: 'Normal', action: 'Dump', reportingController: 'lockmig.dev/controller', reportingInstance: 'x',
      regarding: { kind: 'Widget', name: 'w1', namespace: 'crud' } } });
    const list = await ev.listNamespacedEvent({ namespace: 'crud', fieldSelector: 'regarding.name=w1' });
    expect(list.items).toHaveLength(1);
    expect(list.items[0]!.metadata?.name).toMatch(/^w1\.[a-z0-9]{5}$/);
    // one storage behind both event APIs, as in kube-apiserver: kubectl describe (core/v1) sees it
    const coreEvents = await core.listNamespacedEvent({ namespace: 'crud', fieldSelector: 'involvedObject.name=w1' });
    expect(coreEvents.items.map((e) => [e.message, e.reportingComponent, e.involvedObject.kind])).toEqual([['done', 'lockmig.dev/controller', 'Widget']]);
    const incomplete = await failure(ev.createNamespacedEvent({ namespace: 'crud', body: { metadata: { name: 'e2' }, reason: 'X', type: 'Normal' } as any }));
    expect(incomplete.code).toBe(422);
    expect(incomplete.status.message).toContain('eventTime: Required value');
  });

  it('refuses a wrong bearer token', async () => {
    const r = await fetch(`${srv.url}/api/v1/namespaces`, { headers: { authorization: 'Bearer wrong' } });
    expect(r.status).toBe(401);
    expect(srv.requests.filter((q) => q.path !== '/api/v1/namespaces' && q.status === 401)).toEqual([]); // client-node sent it
  });
});

describe('CRD lifecycle', () => {
  it('installs a CRD created through the API and removes its objects, watches and discovery when it is deleted', async () => {
    const own = await startFakeApiServer();
    try {
      const crd = YAML.parse(fs.readFileSync(WIDGETS, 'utf8'));
      await own.kubeConfig.makeApiClient(ApiextensionsV1Api).createCustomResourceDefinition({ body: crd });
      const c = own.kubeConfig.makeApiClient(CustomObjectsApi);
      await c.createNamespacedCustomObject({ ...W, namespace: 'default', body: {
        apiVersion: 'example.dev/v1alpha1', kind: 'Widget', metadata: { name: 'doomed' }, spec: { sourcePodName: 'p' } } });
      const events: string[] = [];
      let ended: unknown = 'open';
      await new Watch(own.kubeConfig).watch('/apis/example.dev/v1alpha1/widgets', { resourceVersion: own.resourceVersion() },
        (type, obj) => events.push(`${type}:${obj.metadata.name}`), (e) => { ended = e; });
      await own.kubeConfig.makeApiClient(ApiextensionsV1Api).deleteCustomResourceDefinition({ name: 'widgets.example.dev' });
      for (let i = 0; i < 300 && ended === 'open'; i++) await new Promise((r) => setTimeout(r, 10));
      expect(ended).toBeNull();
      expect(events).toEqual(['DELETED:doomed']);
      const gone = await failure(c.listNamespacedCustomObject({ ...W, namespace: 'default' }));
      expect(gone.code).toBe(404);
      const groups = await fetch(`${own.url}/apis`).then((r) => r.json()) as { groups: { name: string }[] };
      expect(groups.groups.map((g) => g.name)).not.toContain('example.dev');
    } finally {
      await own.close();
    }
  });
});
