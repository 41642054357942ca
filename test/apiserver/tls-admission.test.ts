/**
 * HTTPS serving (openssl and node:crypto certificates), the project's own LockCheckpoint CRD, and
 * mutating/validating admission webhooks called over HTTPS during pod creation.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADD, ApiException, CoreV1Api, CustomObjectsApi, KubeConfig, PatchStrategy, makeInformer, setHeaderOptions } from '@kubernetes/client-node';
import { generateSelfSignedCert, startFakeApiServer, type FakeApiServer } from '../support/apiserver/index.js';
import { REPO_ROOT } from '../helpers/env.js';
import path from 'node:path';

const CRD = path.join(REPO_ROOT, 'crds/lockmig.dev_lockcheckpoints.yaml');
const LC = { group: 'lockmig.dev', version: 'v1alpha1', plural: 'lockcheckpoints' } as const;

async function failure(p: Promise<unknown>): Promise<{ code: number; status: Record<string, any> }> {
  try { await p; } catch (e) {
    if (!(e instanceof ApiException)) throw e;
    return { code: e.code, status: JSON.parse(e.body as string) };
  }
  throw new Error('expected the call to fail');
}

describe('https', () => {
  for (const method of ['openssl', 'node'] as const) {
    it(`serves TLS that client-node verifies (${method} certificate)`, async () => {
      const cert = generateSelfSignedCert({ method });
      expect(cert.method).toBe(method);
      const srv = await startFakeApiServer({ tls: cert });
      try {
        expect(srv.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
        const core = srv.kubeConfig.makeApiClient(CoreV1Api);
        const ns = await core.readNamespace({ name: 'default' });
        expect(ns.status?.phase).toBe('Active');
        // the informer's Watch (node-fetch with client-node's https agent) streams over the same TLS
        const added: string[] = [];
        const inf = makeInformer(srv.kubeConfig, '/api/v1/namespaces/default/configmaps', () => core.listNamespacedConfigMap({ namespace: 'default' }));
        inf.on(ADD, (o) => added.push(o.metadata!.name!));
        await inf.start();
        await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'over-tls' } } });
        for (let i = 0; i < 300 && !added.includes('over-tls'); i++) await new Promise((r) => setTimeout(r, 10));
        await inf.stop();
        expect(added).toEqual(['over-tls']);
        // a client that does not trust the CA is refused
        const kc = new KubeConfig();
        kc.loadFromOptions({ clusters: [{ name: 'c', server: srv.url, skipTLSVerify: false }], users: [{ name: 'u', token: srv.token }],
          contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x' });
        await expect(kc.makeApiClient(CoreV1Api).readNamespace({ name: 'default' })).rejects.toThrow(/certificate/);
      } finally {
        await srv.close();
      }
      // the generated certificate itself works for an independent HTTPS server (e.g. a webhook)
      const server = https.createServer({ cert: cert.certPem, key: cert.keyPem }, (_q, r) => r.end('hi'));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      try {
        const port = (server.address() as AddressInfo).port;
        const body = await new Promise<string>((resolve, reject) => {
          https.get({ host: '127.0.0.1', port, ca: cert.certPem, path: '/' }, (res) => {
            let s = ''; res.on('data', (c) => { s += c; }); res.on('end', () => resolve(s));
          }).on('error', reject);
        });
        expect(body).toBe('hi');
      } finally {
        server.close();
      }
    });
  }
});

describe('LockCheckpoint CRD (crds/lockmig.dev_lockcheckpoints.yaml)', () => {
  let srv: FakeApiServer;
  let custom: CustomObjectsApi;
  beforeAll(async () => {
    srv = await startFakeApiServer({ crds: [CRD], https: true }); // the default certificate path
    custom = srv.kubeConfig.makeApiClient(CustomObjectsApi);
  });
  afterAll(async () => { await srv?.close(); });

  it('is served with the defaults of its schema', async () => {
    const lc = await custom.createNamespacedCustomObject({ ...LC, namespace: 'default', body: {
      apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name: 'db' }, spec: { sourcePodName: 'db-0' } } }) as any;
    expect(lc.spec.sourcePodName).toBe('db-0');
    expect(lc.spec.lockKinds).toContain('POSIX');
    expect(lc.spec.storage).toEqual({ nodeLocal: {} });
    expect(lc.spec.restore.mode).toBe('Auto');
    const list = await custom.listNamespacedCustomObject({ ...LC, namespace: 'default', labelSelector: 'lockmig.dev/node=n1' }) as any;
    expect(list.items).toEqual([]);
  });

  it('rejects a spec change, a bad union and a bad condition', async () => {
    const imm = await failure(custom.patchNamespacedCustomObject({ ...LC, namespace: 'default', name: 'db', body: { spec: { sourcePodName: 'other' } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch)));
    expect(imm.status.message).toContain('spec: Invalid value: "object": spec is immutable');
    const union = await failure(custom.createNamespacedCustomObject({ ...LC, namespace: 'default', body: {
      apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name: 'u' },
      spec: { sourcePodName: 'x', storage: { nodeLocal: {}, persistentVolumeClaim: { claimName: 'c' } }, lockKinds: ['POSIX', 'BOGUS'] } } }));
    expect(union.status.message).toContain('spec.storage: Invalid value: "object": exactly one of storage.nodeLocal or storage.persistentVolumeClaim must be set');
    expect(union.status.message).toContain('spec.lockKinds[1]: Unsupported value: "BOGUS"');
    const path = await failure(custom.createNamespacedCustomObject({ ...LC, namespace: 'default', body: {
      apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name: 'p' },
      spec: { sourcePodName: 'x', storage: { nodeLocal: { path: '../escape' } } } } }));
    expect(path.status.message).toContain('spec.storage.nodeLocal.path: Invalid value: "../escape"');
    const cond = await failure(custom.patchNamespacedCustomObjectStatus({ ...LC, namespace: 'default', name: 'db', body: {
      status: { phase: 'Dumping', conditions: [{ type: 'Ready', status: 'Maybe', reason: 'Dumping', message: '', lastTransitionTime: 'yesterday' }] } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch)));
    expect(cond.code).toBe(422);
    expect(cond.status.message).toContain('status.conditions[0].status: Unsupported value: "Maybe"');
    expect(cond.status.message).toContain('status.conditions[0].lastTransitionTime: Invalid value: "yesterday"');
    const ok = await custom.patchNamespacedCustomObjectStatus({ ...LC, namespace: 'default', name: 'db', body: {
      status: { phase: 'Dumping', observedGeneration: 1, conditions: [{ type: 'Ready', status: 'False', reason: 'Dumping', message: 'started', lastTransitionTime: '2026-01-01T00:00:00Z' }] } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch)) as any;
    expect(ok.status.phase).toBe('Dumping');
  });
});

describe('admission webhooks', () => {
  let srv: FakeApiServer;
  let hook: https.Server;
  let hookUrl: string;
  const reviews: any[] = [];
  const cert = generateSelfSignedCert();

  beforeAll(async () => {
    srv = await startFakeApiServer();
    hook = https.createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        const review = JSON.parse(body);
        reviews.push({ ...review, url: req.url });
        const pod = review.request.object ?? review.request.oldObject;
        const response: Record<string, unknown> = { uid: review.request.uid, allowed: true };
        if (req.url === '/validate') {
          if (pod.metadata.labels?.deny) Object.assign(response, { allowed: false, status: { code: 403, message: 'labelled deny' } });
        } else if (pod.metadata.annotations?.['wrap']) {
          const patch = [
            { op: 'add', path: '/spec/containers/0/command', value: ['/shim', '--', ...pod.spec.containers[0].command] },
            { op: 'add', path: '/metadata/labels', value: { ...pod.metadata.labels, mutated: 'yes' } },
          ];
          Object.assign(response, { patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(patch)).toString('base64') });
        }
        const reply = () => {
          res.writeHead(200, { 'Content-Type': 'application/json' });
          res.end(JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response }));
        };
        if (req.url === '/slow') setTimeout(reply, 20 + Math.random() * 30); else reply();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
    hookUrl = `https://127.0.0.1:${(hook.address() as AddressInfo).port}`;
    const caBundle = Buffer.from(cert.certPem).toString('base64');
    const rules = [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }];
    await srv.create({ apiVersion: 'admissionregistration.k8s.io/v1', kind: 'MutatingWebhookConfiguration', metadata: { name: 'm' },
      webhooks: [{ name: 'wrap.lockmig.dev', clientConfig: { url: `${hookUrl}/mutate`, caBundle }, rules, sideEffects: 'None',
        admissionReviewVersions: ['v1'], failurePolicy: 'Fail', objectSelector: { matchExpressions: [{ key: 'skip', operator: 'DoesNotExist' }] } }] });
    await srv.create({ apiVersion: 'admissionregistration.k8s.io/v1', kind: 'ValidatingWebhookConfiguration', metadata: { name: 'v' },
      webhooks: [{ name: 'check.lockmig.dev', clientConfig: { url: `${hookUrl}/validate`, caBundle }, rules, sideEffects: 'None',
        admissionReviewVersions: ['v1'], failurePolicy: 'Fail' }] });
  });
  afterAll(async () => { await srv?.close(); hook?.close(); });

  const pod = (name: string, extra: { labels?: Record<string, string>; annotations?: Record<string, string> } = {}) => ({
    metadata: { name, ...extra }, spec: { containers: [{ name: 'app', image: 'busybox:1.36', command: ['sleep', '1'] }] },
  });

  it('applies the JSONPatch of a mutating webhook to a created pod', async () => {
    const core = srv.kubeConfig.makeApiClient(CoreV1Api);
    const p = await core.createNamespacedPod({ namespace: 'default', body: pod('wrapped', { annotations: { wrap: 'y' } }) });
    expect(p.spec?.containers[0]?.command).toEqual(['/shim', '--', 'sleep', '1']);
    expect(p.metadata?.labels?.mutated).toBe('yes');
    const mutating = reviews.find((r) => r.request.name === 'wrapped' && r.url === '/mutate');
    expect(mutating.request).toMatchObject({ operation: 'CREATE', namespace: 'default', kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' } });
    // as upstream: mutating webhooks run before uid/creationTimestamp exist; validating ones see the final object
    expect(mutating.request.object.metadata.uid).toBeUndefined();
    expect(mutating.request.object.spec.containers[0].imagePullPolicy).toBe('IfNotPresent'); // defaulted first
    const validating = reviews.find((r) => r.request.name === 'wrapped' && r.url === '/validate');
    expect(validating.request.object.metadata.uid).toBe(p.metadata?.uid);
    expect(validating.request.object.spec.containers[0].command).toEqual(['/shim', '--', 'sleep', '1']);
    const gen = await core.createNamespacedPod({ namespace: 'default', body: { ...pod(''), metadata: { generateName: 'gen-' } } });
    const genReview = reviews.find((r) => r.url === '/mutate' && r.request.object.metadata.generateName === 'gen-');
    expect(genReview.request.name).toBe('');
    expect(gen.metadata?.name).toMatch(/^gen-[a-z0-9]{5}$/);
    const untouched = await core.createNamespacedPod({ namespace: 'default', body: pod('plain') });
    expect(untouched.spec?.containers[0]?.command).toEqual(['sleep', '1']);
  });

  it('re-runs writes whose object changed while a webhook was deciding (no lost updates)', async () => {
    await srv.create({ apiVersion: 'admissionregistration.k8s.io/v1', kind: 'ValidatingWebhookConfiguration', metadata: { name: 'slow' },
      webhooks: [{ name: 'slow.lockmig.dev', clientConfig: { url: `${hookUrl}/slow`, caBundle: Buffer.from(cert.certPem).toString('base64') },
        rules: [{ operations: ['UPDATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['configmaps'] }], sideEffects: 'None',
        admissionReviewVersions: ['v1'] }] });
    const core = srv.kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'contended' } } });
    const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
    await Promise.all(Array.from({ length: 8 }, (_, i) =>
      core.patchNamespacedConfigMap({ name: 'contended', namespace: 'default', body: { data: { [`k${i}`]: 'v' } } }, merge)));
    const cm = await core.readNamespacedConfigMap({ name: 'contended', namespace: 'default' });
    expect(Object.keys(cm.data ?? {}).sort()).toEqual(['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7']);
    await srv.delete('admissionregistration.k8s.io/v1', 'ValidatingWebhookConfiguration', 'slow');
  });

  it('honours objectSelector, validating denials and failurePolicy', async () => {
    const core = srv.kubeConfig.makeApiClient(CoreV1Api);
    const before = reviews.length;
    await core.createNamespacedPod({ namespace: 'default', body: pod('skipped', { labels: { skip: '1' }, annotations: { wrap: 'y' } }) });
    expect(reviews.slice(before).map((r) => `${r.url}:${r.request.name}`)).toEqual(['/validate:skipped']); // objectSelector kept the mutating hook out
    const denied = await failure(core.createNamespacedPod({ namespace: 'default', body: pod('denied', { labels: { deny: '1' } }) }));
    expect(denied.code).toBe(403);
    expect(denied.status.message).toBe('admission webhook "check.lockmig.dev" denied the request: labelled deny');
    hook.close();
    hook.closeAllConnections();
    const down = await failure(core.createNamespacedPod({ namespace: 'default', body: pod('down') }));
    expect(down.code).toBe(500);
    expect(down.status.message).toMatch(/^Internal error occurred: failed calling webhook "wrap\.lockmig\.dev": failed to call webhook: /);
  });
});
