/**
 * charts/lockmig against a real kube-apiserver (its own; test/support/envtest):
 *  - every documented variation, rendered by helm, passes a server-side dry run (`kubectl apply
 *    --server-side --dry-run=server`): the API server's own validation of every field. Objects of
 *    APIs this server does not serve (cert-manager's Certificate/Issuer, prometheus-operator's
 *    ServiceMonitor; their CRDs are not part of this repository) are left out and named;
 *  - `helm install --dry-run=server` reads an existing webhook certificate back (lookup);
 *  - a real `helm install` (CRD from crds/, the ValidatingAdmissionPolicy discovered from the
 *    server), `helm upgrade` that keeps the CA, the label guard and the fail-closed registration
 *    as the API server applies them, and `helm uninstall` leaving nothing but the CRD.
 * There is no controller-manager, scheduler or kubelet: the workloads are stored, not run (that
 * is the real-node suite's part).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdmissionregistrationV1Api, AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { missing } from '../helpers/env.js';
import {
  CHART_DIR, createTestNamespace, helm, helmTemplate, installCrd, kubectl, ok, parseManifests, startApiServer, type KubeApiServer, type Manifest,
} from '../support/envtest/index.js';
import { checkConsistency, checkGeneratedTls, one, type Obj } from './manifests.js';
import { VARIATIONS } from './variations.js';

const skip = missing({ k8s: true }, 'the chart on a real API server');
const FOREIGN = new Set(['Certificate', 'Issuer', 'ServiceMonitor']);
const RELEASE_NS = 'lockmig-system';
let api: KubeApiServer;
let tmp = '';

const kc = (args: string[], input?: string) => kubectl(args, { kubeconfig: api.kubeconfigPath, input });
const hc = (args: string[]) => helm(args, { kubeconfig: api.kubeconfigPath });
const valuesFile = (name: string, values: Record<string, unknown>) => {
  const f = path.join(tmp, `${name.replace(/[^a-z0-9]+/gi, '-')}.json`);
  fs.writeFileSync(f, JSON.stringify(values));
  return f;
};
/** The manifests `helm install --dry-run` prints between MANIFEST: and NOTES:. */
const manifestOf = (out: string): Manifest[] => parseManifests(out.slice(out.indexOf('MANIFEST:') + 'MANIFEST:'.length, out.indexOf('NOTES:') >= 0 ? out.indexOf('NOTES:') : undefined));

beforeAll(async () => {
  if (skip) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-helm-server-'));
  api = await startApiServer();
  await createTestNamespace(api.kubeConfig, { name: RELEASE_NS, labels: { 'pod-security.kubernetes.io/enforce': 'privileged' } });
}, 120_000);
afterAll(async () => {
  await api?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe.skipIf(skip)('the chart on a real API server', () => {
  describe('server-side dry run of every documented variation', () => {
    // Each variation is rendered as its own release (`var<i>` in namespace `var<i>`, so names do
    // not collide) and all of them go to the server in one `kubectl apply --server-side
    // --dry-run=server -o json`: the answer lists every object the server accepted, found again
    // by its app.kubernetes.io/instance label.
    const entries = Object.entries(VARIATIONS);
    const result: { accepted: Obj[]; stderr: string; served: Map<string, Manifest[]> } = { accepted: [], stderr: '', served: new Map() };
    beforeAll(async () => {
      if (skip) return;
      await installCrd(api);
      const rendered = await Promise.all(entries.map(async ([, values], i) => {
        await createTestNamespace(api.kubeConfig, { name: `var${i}` });
        return (await helmTemplate({ values, release: `var${i}`, namespace: `var${i}`, extraArgs: ['--kube-version', '1.32.13', '--api-versions', 'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy'] })).docs;
      }));
      // the CRD (the same file in every variation) is installed already; the install test applies it from the chart
      const mine = rendered.map((docs) => docs.filter((d) => d.kind !== 'CustomResourceDefinition'));
      mine.forEach((docs, i) => result.served.set(`var${i}`, docs));
      const input = mine.flat().filter((d) => !FOREIGN.has(d.kind)).map((d) => JSON.stringify(d)).join('\n');
      const r = await kc(['apply', '--server-side', '--dry-run=server', '--field-manager', 'helm-test', '-o', 'json', '-f', '-'], input);
      result.stderr = r.stderr;
      const out = r.stdout.trim() ? JSON.parse(r.stdout) as Obj : { items: [] };
      result.accepted = out.kind === 'List' ? out.items : [out];
    }, 120_000);

    it.each(entries.map(([name], i) => [name, i] as const))('%s: the server accepts every object', (name, i) => {
      const release = `var${i}`;
      const docs = result.served.get(release)!;
      const served = docs.filter((d) => !FOREIGN.has(d.kind));
      const left = docs.filter((d) => FOREIGN.has(d.kind)).map((d) => d.kind);
      const values = JSON.stringify(VARIATIONS[name]);
      if (values.includes('"certManager":{"enabled":true')) expect(left).toContain('Certificate');
      if (values.includes('"serviceMonitor":{"enabled":true')) expect(left).toContain('ServiceMonitor');
      const mine = result.accepted.filter((o) => o.metadata?.labels?.['app.kubernetes.io/instance'] === release);
      const key = (o: Obj) => `${o.kind}/${o.metadata.name}`;
      const legend = entries.map(([n], j) => `var${j} = ${n}`).join('; ');
      expect(mine.map(key).sort(), `${result.stderr}\n(${legend})`).toEqual(served.map(key).sort());
    });
  });

  it('helm install --dry-run=server keeps an existing webhook certificate (lookup), and prints the NOTES', async () => {
    const ns = (await createTestNamespace(api.kubeConfig, { prefix: 'lookup' })).name;
    const existing = { 'ca.crt': Buffer.from('CA').toString('base64'), 'tls.crt': Buffer.from('CERT').toString('base64'), 'tls.key': Buffer.from('KEY').toString('base64') };
    // helm adopts only objects carrying the release's ownership metadata (as it writes them itself)
    await api.kubeConfig.makeApiClient(CoreV1Api).createNamespacedSecret({ namespace: ns, body: {
      metadata: { name: 'lockmig-webhook-tls', labels: { 'app.kubernetes.io/managed-by': 'Helm' }, annotations: { 'meta.helm.sh/release-name': 'lockmig', 'meta.helm.sh/release-namespace': ns } },
      type: 'kubernetes.io/tls', data: existing,
    } });
    // the CRD was installed with kubectl (as the other tests here do): helm must not own it (crds.install=false)
    const refused = await hc(['install', 'lockmig', CHART_DIR, '--namespace', ns, '--dry-run=server']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('CustomResourceDefinition "lockcheckpoints.lockmig.dev" in namespace "" exists and cannot be imported into the current release');
    const out = ok(await hc(['install', 'lockmig', CHART_DIR, '--namespace', ns, '--dry-run=server', '--set', 'crds.install=false']), 'helm install --dry-run=server');
    const docs = manifestOf(out);
    expect(one(docs, 'Secret').data).toEqual(existing);
    expect(one(docs, 'MutatingWebhookConfiguration').webhooks[0].clientConfig.caBundle).toBe(existing['ca.crt']);
    // the server has ValidatingAdmissionPolicy v1 (1.30+): helm discovers it, the guard is rendered
    expect(docs.map((d) => d.kind)).toEqual(expect.arrayContaining(['ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding']));
    checkConsistency(docs, { ns });
    const notes = out.slice(out.indexOf('NOTES:'));
    expect(notes).toContain(`kubectl -n ${ns} get pods -l app.kubernetes.io/instance=lockmig`);
    expect(notes).toContain('lockmig.dev/restore: "true"');
    expect(notes).not.toContain('WARNING');
    const ignore = ok(await hc(['install', 'lockmig', CHART_DIR, '--namespace', ns, '--dry-run=server', '-f', valuesFile('ignore', { crds: { install: false }, webhook: { failurePolicy: 'Ignore' } })]), 'helm install --dry-run=server');
    expect(ignore.slice(ignore.indexOf('NOTES:'))).toContain('WARNING: webhook.failurePolicy=Ignore');
    // a dry run creates nothing
    expect((await kc(['get', 'deploy,mutatingwebhookconfiguration', '-A', '-l', 'app.kubernetes.io/instance=lockmig'])).stderr).toContain('No resources found');
  });

  it('install → upgrade keeps the CA → the API server applies the guard and fails closed → uninstall leaves only the CRD', async () => {
    await kc(['delete', 'crd', 'lockcheckpoints.lockmig.dev', '--ignore-not-found']);
    const installed = ok(await hc(['install', 'lockmig', CHART_DIR, '--namespace', RELEASE_NS]), 'helm install');
    expect(installed).toMatch(/STATUS: deployed/);
    // the CRD came from the chart (templates/crds.yaml) and is served; the uninstall hook is not created by an install
    ok(await kc(['wait', '--for=condition=Established', '--timeout=60s', 'crd/lockcheckpoints.lockmig.dev']), 'CRD Established');
    expect((await kc(['get', 'job,sa', '-n', RELEASE_NS, '-l', 'app.kubernetes.io/component=cleanup', '-o', 'name'])).stdout).toBe('');
    expect((await kc(['get', 'lease', 'lockmig-controller-leader', '-n', RELEASE_NS, '-o', 'name'])).stdout.trim()).toBe('lease.coordination.k8s.io/lockmig-controller-leader');
    const core = api.kubeConfig.makeApiClient(CoreV1Api);
    const adm = api.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    const secret = await core.readNamespacedSecret({ name: 'lockmig-webhook-tls', namespace: RELEASE_NS });
    const mwc = await adm.readMutatingWebhookConfiguration({ name: 'lockmig-webhook' });
    checkGeneratedTls([secret as unknown as Manifest, { ...mwc, kind: 'MutatingWebhookConfiguration' } as unknown as Manifest], `lockmig-webhook.${RELEASE_NS}.svc`);
    expect((await adm.readValidatingAdmissionPolicy({ name: 'lockmig-restore-label' })).spec?.failurePolicy).toBe('Fail');

    // upgrade: lookup finds the Secret, so the CA and certificate stay; the new value is rolled out
    ok(await hc(['upgrade', 'lockmig', CHART_DIR, '--namespace', RELEASE_NS, '--reuse-values', '--set', 'logLevel=debug']), 'helm upgrade');
    const after = await core.readNamespacedSecret({ name: 'lockmig-webhook-tls', namespace: RELEASE_NS });
    expect(after.data).toEqual(secret.data);
    expect((await adm.readMutatingWebhookConfiguration({ name: 'lockmig-webhook' })).webhooks![0]!.clientConfig.caBundle).toEqual(mwc.webhooks![0]!.clientConfig.caBundle);
    const dep = await api.kubeConfig.makeApiClient(AppsV1Api).readNamespacedDeployment({ name: 'lockmig-controller', namespace: RELEASE_NS });
    expect(dep.spec!.template.spec!.containers[0]!.env!.find((e) => e.name === 'LOCKMIG_LOG_LEVEL')!.value).toBe('debug');
    expect(dep.metadata!.generation).toBe(2);

    // what users meet at pod creation, as the API server applies the chart's objects
    const apps = (await createTestNamespace(api.kubeConfig, { prefix: 'apps' })).name;
    const pod = (name: string, labels?: Record<string, string>) => JSON.stringify({
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name, namespace: apps, labels, annotations: { 'lockmig.dev/restore-from': 'db-move' } },
      spec: { containers: [{ name: 'db', image: 'busybox', command: ['sleep', '1'] }] },
    });
    const unlabelled = await kc(['create', '-f', '-'], pod('db-1'));
    expect(unlabelled.code).not.toBe(0);
    expect(unlabelled.stderr.trim()).toBe('The pods "db-1" is invalid: : ValidatingAdmissionPolicy \'lockmig-restore-label\' with binding \'lockmig-restore-label\' denied request: '
      + 'pods annotated lockmig.dev/restore-from must also carry the label(s) {"lockmig.dev/restore":"true"} (or lockmig.dev/migrate), otherwise lockmig\'s webhook never sees them and they start without their locks');
    const labelled = await kc(['create', '-f', '-'], pod('db-2', { 'lockmig.dev/restore': 'true' }));
    expect(labelled.code).not.toBe(0); // no webhook pod runs here: failurePolicy Fail keeps the pod out
    expect(labelled.stderr).toContain('failed calling webhook "restore.lockmig.dev"');
    expect(labelled.stderr).toContain(`lockmig-webhook.${RELEASE_NS}.svc:443`);
    ok(await kc(['create', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'plain', namespace: apps }, spec: { containers: [{ name: 'c', image: 'busybox' }] } })), 'a pod that did not opt in');

    // --no-hooks: the pre-delete cleanup Job would wait for a pod that nothing runs here (no kubelet);
    // the real-node suite runs the hook
    ok(await hc(['uninstall', 'lockmig', '--namespace', RELEASE_NS, '--no-hooks']), 'helm uninstall');
    const left = await kc(['get', 'deploy,ds,svc,sa,secret,role,rolebinding,pdb,lease,job,clusterrole,clusterrolebinding,mutatingwebhookconfiguration,validatingwebhookconfiguration,validatingadmissionpolicy,validatingadmissionpolicybinding',
      '-A', '-l', 'app.kubernetes.io/instance=lockmig', '-o', 'name']);
    expect(left.stdout).toBe('');
    expect((await kc(['get', 'crd', 'lockcheckpoints.lockmig.dev', '-o', 'name'])).stdout.trim()).toBe('customresourcedefinition.apiextensions.k8s.io/lockcheckpoints.lockmig.dev');
    // with the registration gone, an opted-in pod is created unchanged (docs/install.md "Uninstall")
    const now = ok(await kc(['create', '-o', 'json', '-f', '-'], pod('db-3', { 'lockmig.dev/restore': 'true' })), 'pod after uninstall');
    expect(JSON.parse(now).spec.containers[0].command).toEqual(['sleep', '1']);
  });
});
