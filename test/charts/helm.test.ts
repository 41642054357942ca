/**
 * charts/lockmig rendered by the real helm (no cluster): `helm lint --strict` of the defaults and
 * of every documented values variation, the schema enforced by helm itself, and assertions on the
 * objects `helm template` renders for each variation (charts/lockmig/README.md, docs/install.md).
 * The server-side half (dry run against a real API server, install/upgrade/uninstall) is
 * helm-server.test.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { REPO_ROOT, missing } from '../helpers/env.js';
import { CHART_DIR, helm, helmTemplate, type Manifest } from '../support/envtest/index.js';
import { checkConsistency, checkGeneratedTls, container, of, one, workloads, type Obj } from './manifests.js';
import { VARIATIONS } from './variations.js';

const skip = missing({ k8s: true }, 'the chart with real helm');
const VAP = 'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-helm-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** helm template, once per distinct (values, options) in this file. */
const rendered = new Map<string, Promise<{ docs: Manifest[]; text: string }>>();
const renderFull = (values?: Record<string, unknown>, o: { apiVersions?: string[]; release?: string; namespace?: string } = {}) => {
  const key = JSON.stringify([values ?? {}, o]);
  if (!rendered.has(key)) rendered.set(key, helmTemplate({ values, ...o }));
  return rendered.get(key)!;
};
/** The objects (a deep copy: tests may not change each other's view). */
const render = async (values?: Record<string, unknown>, o: { apiVersions?: string[]; release?: string; namespace?: string } = {}): Promise<Manifest[]> =>
  structuredClone((await renderFull(values, o)).docs);

function valuesFile(name: string, values: Record<string, unknown>): string {
  const f = path.join(tmp, `${name.replace(/[^a-z0-9]+/gi, '-')}.json`);
  fs.writeFileSync(f, JSON.stringify(values));
  return f;
}

describe.skipIf(skip).concurrent('helm lint --strict', () => {
  it.each(Object.entries(VARIATIONS))('passes with %s', async (name, values) => {
    const r = await helm(['lint', '--strict', CHART_DIR, '--namespace', 'lockmig-system', '-f', valuesFile(name, values)]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
    expect(r.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
  });
});

describe.skipIf(skip).concurrent('helm enforces values.schema.json', () => {
  const bad: Array<[string, string[], RegExp]> = [
    ['a failurePolicy the API server does not know (docs/install.md)', ['--set', 'webhook.failurePolicy=Retry'], /webhook\.failurePolicy must be one of the following: "Fail", "Ignore"/],
    ['a typo in a key', ['--set', 'controller.replica=3'], /Additional property replica is not allowed/],
    ['a webhook timeout above 30 s', ['--set', 'webhook.timeoutSeconds=45'], /webhook\.timeoutSeconds/],
    ['a relative storage root', ['--set', 'storage.root=var/lib/lockmig'], /storage\.root/],
    ['a malformed digest', ['--set', 'image.digest=latest'], /image\.digest/],
  ];
  it.each(bad)('rejects %s, naming the value', async (_what, args, message) => {
    const r = await helm(['template', 'lockmig', CHART_DIR, ...args]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("values don't meet the specifications of the schema(s)");
    expect(r.stderr).toMatch(message);
  });
});

describe.skipIf(skip)('helm template', () => {
  it('every template renders in some documented variation, and every variation is consistent', async () => {
    const sources = new Set<string>();
    const all = await Promise.all(Object.entries(VARIATIONS).map(async ([name, values]) => [name, values, await renderFull(values, { apiVersions: [VAP] })] as const));
    for (const [name, values, { docs, text }] of all) {
      for (const m of text.matchAll(/^# Source: lockmig\/(templates\/[^\n]+)$/gm)) sources.add(m[1]!);
      try {
        const external = ['controller', 'agent', 'webhook'].flatMap((c) => {
          const sa = (values[c] as { serviceAccount?: { create?: boolean; name?: string } } | undefined)?.serviceAccount;
          return sa?.create === false && sa.name ? [sa.name] : [];
        });
        checkConsistency(docs, { ns: 'lockmig-system', externalServiceAccounts: external });
      } catch (e) {
        throw new Error(`variation "${name}": ${(e as Error).message}`);
      }
    }
    const templates = fs.readdirSync(path.join(CHART_DIR, 'templates')).filter((f) => f.endsWith('.yaml')).map((f) => `templates/${f}`);
    expect([...sources].sort()).toEqual(templates.sort());
  });

  it('renders the defaults: these objects, the appVersion image, a CA that signed a certificate for the Service', async () => {
    const docs = await render();
    expect(docs.map((d) => `${d.kind}/${d.metadata.name}`).sort()).toEqual([
      'ClusterRole/lockmig-agent', 'ClusterRole/lockmig-cleanup', 'ClusterRole/lockmig-controller', 'ClusterRole/lockmig-lock-viewer', 'ClusterRole/lockmig-webhook',
      'ClusterRoleBinding/lockmig-agent', 'ClusterRoleBinding/lockmig-cleanup', 'ClusterRoleBinding/lockmig-controller', 'ClusterRoleBinding/lockmig-webhook',
      'CustomResourceDefinition/lockcheckpoints.lockmig.dev', 'DaemonSet/lockmig-agent', 'Deployment/lockmig-controller', 'Deployment/lockmig-webhook',
      'Job/lockmig-cleanup', 'Lease/lockmig-controller-leader', 'MutatingWebhookConfiguration/lockmig-webhook', 'PodDisruptionBudget/lockmig-webhook',
      'Role/lockmig-controller-leader-election', 'RoleBinding/lockmig-controller-leader-election', 'Secret/lockmig-webhook-tls',
      'Service/lockmig-agent-metrics', 'Service/lockmig-controller-metrics', 'Service/lockmig-webhook',
      'ServiceAccount/lockmig-agent', 'ServiceAccount/lockmig-cleanup', 'ServiceAccount/lockmig-controller', 'ServiceAccount/lockmig-webhook',
      'ValidatingWebhookConfiguration/lockmig-webhook-stop',
    ]);
    // the uninstall cleanup exists only as pre-delete hooks (created by helm uninstall, not by install)
    for (const d of docs.filter((x) => x.metadata.labels?.['app.kubernetes.io/component'] === 'cleanup')) {
      expect(d.metadata.annotations?.['helm.sh/hook'], `${d.kind} ${d.metadata.name}`).toBe('pre-delete');
    }
    const chart = YAML.parse(fs.readFileSync(path.join(CHART_DIR, 'Chart.yaml'), 'utf8')) as { appVersion: string };
    for (const w of [...workloads(docs), one(docs, 'Job')]) expect(container(w).image).toBe(`ghcr.io/lockmig/lockmig:${chart.appVersion}`);
    const { cert } = checkGeneratedTls(docs, 'lockmig-webhook.lockmig-system.svc');
    // validityDays 3650
    expect(Date.parse(cert.validTo) - Date.now()).toBeGreaterThan(3600 * 24 * 3600 * 1000);
  });

  it('a second render without a cluster generates a new CA (no lookup): why upgrades need helm-server.test.ts', async () => {
    const [a, b] = [await render(), (await helmTemplate()).docs];
    expect(one(a, 'Secret').data['ca.crt']).not.toBe(one(b, 'Secret').data['ca.crt']);
  });

  it('controller: `lockmig controller` with leader election, probes on the health port, locked-down pod', async () => {
    const docs = await render();
    const dep = one(docs, 'Deployment', 'lockmig-controller');
    const c = container(dep);
    expect(dep.spec.replicas).toBe(2);
    // the chart creates the Lease (so helm uninstall removes it); the controllers only renew it
    expect(c.args).toEqual(['controller', '--health-addr=:8081', '--metrics-addr=:8080', '--leader-elect', '--lease-name=lockmig-controller-leader', '--lease-create=false']);
    expect(one(docs, 'Lease').metadata.name).toBe('lockmig-controller-leader');
    expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'health' });
    expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'health' });
    expect(c.ports.map((p: Obj) => p.name)).toEqual(['health', 'metrics']);
    for (const w of [dep, one(docs, 'Deployment', 'lockmig-webhook')]) {
      const sc = container(w).securityContext;
      expect(sc).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } });
      expect(w.spec.template.spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 65532, seccompProfile: { type: 'RuntimeDefault' } });
    }
    const lease = one(docs, 'Role');
    expect(lease.rules).toEqual([{ apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['lockmig-controller-leader'], verbs: ['get', 'update'] }]);
  });

  it('agent: privileged, hostPID, NODE_NAME from the downward API, host mounts, every node, system-node-critical', async () => {
    const ds = one(await render(), 'DaemonSet');
    const pod = ds.spec.template.spec;
    const c = container(ds);
    expect(pod.hostPID).toBe(true);
    expect(c.securityContext).toMatchObject({ privileged: true, runAsUser: 0 });
    expect(c.env.find((e: Obj) => e.name === 'NODE_NAME').valueFrom.fieldRef.fieldPath).toBe('spec.nodeName');
    // per-node paths under the shared host directories (nodes that share a filesystem do not collide)
    expect(c.args).toEqual(expect.arrayContaining(['agent', '--node=$(NODE_NAME)', '--storage-root=/var/lib/lockmig/checkpoints/$(NODE_NAME)', '--vault-socket=/run/lockmig/$(NODE_NAME)/vault.sock', '--shim-dir=/var/lib/lockmig/shim']));
    const hostPaths = Object.fromEntries(pod.volumes.filter((v: Obj) => v.hostPath).map((v: Obj) => [v.name, v.hostPath.path]));
    expect(hostPaths).toEqual({ checkpoints: '/var/lib/lockmig/checkpoints', vault: '/run/lockmig', shim: '/var/lib/lockmig/shim', 'kubelet-checkpoints': '/var/lib/kubelet/checkpoints' });
    // the kubelet's checkpoint archives (spec.source.kubeletCheckpoint): read only, at the path the agent is told
    expect(pod.volumes.find((v: Obj) => v.name === 'kubelet-checkpoints').hostPath.type).toBe('DirectoryOrCreate');
    expect(c.volumeMounts.find((m: Obj) => m.name === 'kubelet-checkpoints')).toEqual({ name: 'kubelet-checkpoints', mountPath: '/var/lib/kubelet/checkpoints', readOnly: true });
    expect(c.volumeMounts.filter((m: Obj) => !m.readOnly).map((m: Obj) => m.name).sort()).toEqual(['checkpoints', 'shim', 'tmp', 'vault']);
    expect(c.args).toContain('--kubelet-checkpoint-dir=/var/lib/kubelet/checkpoints');
    const moved = container(one(await render({ agent: { kubeletCheckpointDir: '/data/kubelet/checkpoints' } }), 'DaemonSet'));
    expect(moved.args).toContain('--kubelet-checkpoint-dir=/data/kubelet/checkpoints');
    expect(moved.volumeMounts.find((m: Obj) => m.name === 'kubelet-checkpoints').mountPath).toBe('/data/kubelet/checkpoints');
    // no cgroup fs (it reads /proc/<pid>/cgroup) and no mountPropagation: a host path that is not a
    // shared mount would stop the container from starting
    expect(c.volumeMounts.some((m: Obj) => m.mountPropagation !== undefined)).toBe(false);
    expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(pod.priorityClassName).toBe('system-node-critical');
    expect(ds.spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
  });

  it('webhook: admission/v1, CREATE of opted-in pods outside kube-system and its own namespace, TLS from the Secret', async () => {
    const docs = await render({}, { namespace: 'ops' });
    const w = one(docs, 'MutatingWebhookConfiguration').webhooks[0];
    expect(w).toMatchObject({ admissionReviewVersions: ['v1'], sideEffects: 'NoneOnDryRun', failurePolicy: 'Fail', timeoutSeconds: 10 });
    expect(w.rules).toEqual([{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'], scope: 'Namespaced' }]);
    expect(w.objectSelector).toEqual({ matchLabels: { 'lockmig.dev/restore': 'true' } });
    expect(w.namespaceSelector).toEqual({ matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['ops', 'kube-system'] }] });
    expect(w.clientConfig.service).toEqual({ name: 'lockmig-webhook', namespace: 'ops', path: '/mutate-pods', port: 443 });
    const c = container(one(docs, 'Deployment', 'lockmig-webhook'));
    expect(c.args).toEqual(expect.arrayContaining(['webhook', '--tls-cert=/etc/lockmig/tls/tls.crt', '--tls-key=/etc/lockmig/tls/tls.key']));
    for (const flag of ['--shim-dir=', '--vault-socket-dir=', '--storage-root=']) expect(c.args.some((a: string) => a.startsWith(flag)), flag).toBe(true);
    expect(c.livenessProbe.httpGet).toEqual({ scheme: 'HTTPS', path: '/healthz', port: 'https' });
    checkGeneratedTls(docs, 'lockmig-webhook.ops.svc');
    expect(one(docs, 'PodDisruptionBudget').spec.minAvailable).toBe(1);
  });

  it('cert-manager: Certificate (+ self-signed Issuer unless one is named), CA injection, no generated Secret', async () => {
    const docs = await render(VARIATIONS['cert-manager with a self-signed Issuer']);
    expect(of(docs, 'Secret')).toHaveLength(0);
    const cert = one(docs, 'Certificate');
    expect(one(docs, 'Issuer').spec.selfSigned).toEqual({});
    expect(cert.spec.issuerRef).toEqual({ name: 'lockmig-webhook-selfsigned', kind: 'Issuer' });
    expect(cert.spec.duration).toBe('87600h');
    expect(cert.spec.dnsNames).toEqual(['lockmig-webhook', 'lockmig-webhook.lockmig-system', 'lockmig-webhook.lockmig-system.svc', 'lockmig-webhook.lockmig-system.svc.cluster.local']);
    const mwc = one(docs, 'MutatingWebhookConfiguration');
    expect(mwc.metadata.annotations['cert-manager.io/inject-ca-from']).toBe(`lockmig-system/${cert.metadata.name}`);
    expect(mwc.webhooks[0].clientConfig.caBundle).toBeUndefined();
    const named = await render(VARIATIONS['cert-manager with a ClusterIssuer']);
    expect(of(named, 'Issuer')).toHaveLength(0);
    expect(one(named, 'Certificate').spec.issuerRef).toEqual({ name: 'my-ca', kind: 'ClusterIssuer' });
  });

  it('metrics off removes the metrics Services and ports; a ServiceMonitor scrapes exactly the metrics Services', async () => {
    const off = await render(VARIATIONS['metrics off']);
    expect(of(off, 'Service').map((s) => s.metadata.name)).toEqual(['lockmig-webhook']);
    for (const w of workloads(off).filter((x) => x.metadata.name !== 'lockmig-webhook')) {
      expect(container(w).args).toContain('--metrics-addr=0');
      expect(container(w).ports.map((p: Obj) => p.name)).toEqual(['health']);
    }
    const sm = await render(VARIATIONS.ServiceMonitor);
    const mon = one(sm, 'ServiceMonitor');
    expect(mon.metadata.labels.release).toBe('prometheus');
    const scraped = of(sm, 'Service').filter((s) => mon.spec.selector.matchExpressions.every((e: Obj) => e.values.includes(s.metadata.labels[e.key])));
    expect(scraped.map((s) => s.metadata.name).sort()).toEqual(['lockmig-agent-metrics', 'lockmig-controller-metrics']);
    for (const s of scraped) expect(s.spec.ports.map((p: Obj) => p.name)).toContain(mon.spec.endpoints[0].port);
  });

  it('image, names, labels and scheduling values reach every workload', async () => {
    const reg = await render(VARIATIONS['private registry, pinned digest, pull secret']);
    for (const w of workloads(reg)) {
      expect(container(w).image).toBe(`registry.example.com/ops/lockmig@sha256:${'a'.repeat(64)}`);
      expect(w.spec.template.spec.imagePullSecrets).toEqual([{ name: 'regcred' }]);
    }
    const docs = await render(VARIATIONS['names, labels and scheduling']);
    expect(docs.filter((d) => d.kind !== 'CustomResourceDefinition').every((d) => d.metadata.labels?.team === 'storage')).toBe(true);
    expect(docs.filter((d) => !d.metadata.name.startsWith('lm')).map((d) => `${d.kind} ${d.metadata.name}`)).toEqual(['CustomResourceDefinition lockcheckpoints.lockmig.dev']);
    for (const w of workloads(docs)) {
      expect(container(w).imagePullPolicy).toBe('Always');
      expect(container(w).env.find((e: Obj) => e.name === 'LOCKMIG_LOG_LEVEL').value).toBe('debug');
    }
    const ctl = one(docs, 'Deployment', 'lm-controller').spec.template;
    expect(ctl.spec.nodeSelector).toEqual({ pool: 'system' });
    expect(ctl.metadata.annotations).toEqual({ 'example.com/a': '1' });
    expect(ctl.metadata.labels.tier).toBe('control');
    const ds = one(docs, 'DaemonSet');
    expect(ds.spec.template.spec.tolerations).toEqual([{ key: 'dedicated', operator: 'Equal', value: 'db', effect: 'NoSchedule' }]);
    expect(ds.spec.updateStrategy.type).toBe('OnDelete'); // the default rollingUpdate stays merged in; the API server accepts it and OnDelete ignores it
    expect(one(docs, 'Deployment', 'lm-webhook').spec.template.spec.affinity).toEqual({ nodeAffinity: {} });
    const stateful = await render(VARIATIONS['agents on stateful nodes only']);
    expect(one(stateful, 'DaemonSet').spec.template.spec.nodeSelector).toEqual({ 'node-role.example.com/stateful': 'true' });
    const optIn = await render(VARIATIONS['namespaces opt in by label']);
    expect(one(optIn, 'MutatingWebhookConfiguration').webhooks[0].namespaceSelector.matchLabels).toEqual({ 'lockmig.dev/enabled': 'true' });
  });

  it('one webhook replica gets no PDB (it would block drains); no leader election: no Role, one namespace watched', async () => {
    expect(of(await render(VARIATIONS['one webhook replica, failurePolicy Ignore']), 'PodDisruptionBudget')).toHaveLength(0);
    const docs = await render(VARIATIONS['no leader election, one watched namespace']);
    expect(of(docs, 'Role')).toHaveLength(0);
    expect(of(docs, 'RoleBinding')).toHaveLength(0);
    expect(container(one(docs, 'Deployment', 'lockmig-controller')).args).toEqual(['controller', '--health-addr=:8081', '--metrics-addr=:8080', '--namespace=prod']);
  });

  it('the CRD, the uninstall hook and the stop webhook can each be turned off', async () => {
    const docs = await render(VARIATIONS['CRD managed elsewhere, no uninstall hook, no stop webhook']);
    for (const k of ['CustomResourceDefinition', 'Job', 'ValidatingWebhookConfiguration']) expect(of(docs, k), k).toHaveLength(0);
    expect(docs.filter((d) => d.metadata.labels?.['app.kubernetes.io/component'] === 'cleanup')).toHaveLength(0);
    const stop = one(await render(), 'ValidatingWebhookConfiguration');
    expect(stop.webhooks.map((w: Obj) => [w.name, w.failurePolicy, w.clientConfig.service.path])).toEqual([
      ['evict.stop.lockmig.dev', 'Ignore', '/stop-pods'], ['delete.stop.lockmig.dev', 'Ignore', '/stop-pods'], ['delete-ns.stop.lockmig.dev', 'Ignore', '/stop-pods'],
    ]);
  });

  it('existing service accounts are used, not created', async () => {
    const docs = await render(VARIATIONS['existing service accounts']);
    expect(of(docs, 'ServiceAccount').map((s) => s.metadata.name)).toEqual(['lockmig-cleanup']); // the hook's own
    const sa = Object.fromEntries(workloads(docs).map((w) => [w.metadata.labels['app.kubernetes.io/component'], w.spec.template.spec.serviceAccountName]));
    expect(sa).toEqual({ controller: 'ctl', agent: 'agt', webhook: 'hook' });
    expect(of(docs, 'ClusterRoleBinding').map((b) => b.subjects[0].name).sort()).toEqual(['agt', 'ctl', 'hook', 'lockmig-cleanup']);
  });

  it('the label guard: a ValidatingAdmissionPolicy where the API exists, none when disabled or on older clusters', async () => {
    expect(of(await render(), 'ValidatingAdmissionPolicy')).toHaveLength(0);
    const docs = await render({}, { apiVersions: [VAP] });
    const vap = one(docs, 'ValidatingAdmissionPolicy');
    const binding = one(docs, 'ValidatingAdmissionPolicyBinding');
    expect(binding.spec).toEqual({ policyName: vap.metadata.name, validationActions: ['Deny'] });
    expect(vap.spec.validations[0].expression).toBe(
      "!has(object.metadata.annotations) || !('lockmig.dev/restore-from' in object.metadata.annotations) || "
      + '((has(object.metadata.labels) && "lockmig.dev/restore" in object.metadata.labels && object.metadata.labels["lockmig.dev/restore"] == "true"))'
      + " || (has(object.metadata.labels) && 'lockmig.dev/migrate' in object.metadata.labels)"
      + " || (namespaceObject != null && has(namespaceObject.metadata.labels) && 'lockmig.dev/migrate' in namespaceObject.metadata.labels)",
    );
    expect(of(await render({ webhook: { labelGuard: { enabled: false } } }, { apiVersions: [VAP] }), 'ValidatingAdmissionPolicy')).toHaveLength(0);
  });

  it('Chart.yaml: v2 application chart, appVersion = package version, kubeVersion >= 1.25', async () => {
    const r = await helm(['show', 'chart', CHART_DIR]);
    const chart = YAML.parse(r.stdout) as Record<string, unknown>;
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(chart).toMatchObject({ apiVersion: 'v2', name: 'lockmig', type: 'application', appVersion: pkg.version, kubeVersion: '>=1.25.0-0' });
    const old = await helm(['template', 'lockmig', CHART_DIR, '--kube-version', '1.24.0']);
    expect(old.code).not.toBe(0);
    expect(old.stderr).toMatch(/chart requires kubeVersion: >=1\.25\.0-0 which is incompatible with Kubernetes v1\.24\.0/);
  });
});
