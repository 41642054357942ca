/**
 * The chart rendered with test/charts/render.ts (a Go-template subset renderer; no helm binary
 * here) under several value sets, each valid against values.schema.json. The rendered YAML must
 * parse, and the objects must fit together the way the API server and kubelet will need:
 * service accounts, roles, secrets, services, ports and selectors all refer to things that exist.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import Ajv from 'ajv';
import YAML from 'yaml';
import { CHART_DIR, readChartFile } from './chart-files.js';
import { mergeValues, renderChart, TemplateError, type RenderedChart } from './render.js';

const VAP = 'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy';
const defaults = YAML.parse(readChartFile('values.yaml')) as Record<string, unknown>;
const validate = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true }).compile(JSON.parse(readChartFile('values.schema.json')) as object);

function render(values: Record<string, unknown> = {}, opts: Parameters<typeof renderChart>[1] = {}): RenderedChart {
  const merged = mergeValues(defaults, values);
  if (!validate(merged)) throw new Error(`test values rejected by the schema: ${JSON.stringify(validate.errors)}`);
  return renderChart(CHART_DIR, { ...opts, values });
}

type Obj = Record<string, any>;
const of = (r: RenderedChart, kind: string): Obj[] => r.docs.filter((d) => d.kind === kind);
const one = (r: RenderedChart, kind: string, name?: string): Obj => {
  const all = of(r, kind).filter((d) => name === undefined || d.metadata.name === name);
  expect(all, `${kind} ${name ?? ''}`).toHaveLength(1);
  return all[0]!;
};
const workloads = (r: RenderedChart): Obj[] => r.docs.filter((d) => d.kind === 'Deployment' || d.kind === 'DaemonSet');
const matches = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);

/** Cross-references every rendered object must satisfy. */
function checkConsistency(r: RenderedChart): void {
  const ns = 'lockmig-system';
  const sas = new Set(of(r, 'ServiceAccount').map((s) => s.metadata.name));
  for (const w of workloads(r)) {
    const pod = w.spec.template;
    expect(matches(w.spec.selector.matchLabels, pod.metadata.labels), `${w.metadata.name} selector`).toBe(true);
    expect(sas.has(pod.spec.serviceAccountName), `${w.metadata.name} service account`).toBe(true);
    const c = pod.spec.containers[0];
    const ports = new Set((c.ports ?? []).map((p: Obj) => p.name));
    for (const probe of [c.livenessProbe, c.readinessProbe]) {
      const port = probe.httpGet?.port ?? probe.tcpSocket?.port;
      expect(ports.has(port), `${w.metadata.name} probe port ${port}`).toBe(true);
    }
    const volumes = new Set((pod.spec.volumes ?? []).map((v: Obj) => v.name));
    for (const m of c.volumeMounts ?? []) expect(volumes.has(m.name), `${w.metadata.name} mount ${m.name}`).toBe(true);
    expect(w.metadata.namespace).toBe(ns);
  }
  for (const s of of(r, 'Service')) {
    const backends = workloads(r).filter((w) => matches(s.spec.selector, w.spec.template.metadata.labels));
    expect(backends.length, `Service ${s.metadata.name} selects a workload`).toBe(1);
    const ports = new Set(backends[0]!.spec.template.spec.containers[0].ports.map((p: Obj) => p.name));
    for (const p of s.spec.ports) expect(ports.has(p.targetPort), `Service ${s.metadata.name} targetPort ${p.targetPort}`).toBe(true);
  }
  const roles = new Set([...of(r, 'ClusterRole'), ...of(r, 'Role')].map((x) => `${x.kind}/${x.metadata.name}`));
  for (const b of [...of(r, 'ClusterRoleBinding'), ...of(r, 'RoleBinding')]) {
    expect(roles.has(`${b.roleRef.kind}/${b.roleRef.name}`), `${b.kind} ${b.metadata.name} roleRef`).toBe(true);
    for (const s of b.subjects) {
      expect(s.namespace).toBe(ns);
      expect(sas.has(s.name), `${b.metadata.name} subject ${s.name}`).toBe(true);
    }
  }
  // the webhook registration points at the webhook Service, which serves the Deployment's https port
  const mwc = one(r, 'MutatingWebhookConfiguration');
  const svc = one(r, 'Service', mwc.webhooks[0].clientConfig.service.name);
  expect(svc.spec.ports.find((p: Obj) => p.port === mwc.webhooks[0].clientConfig.service.port)?.targetPort).toBe('https');
  // the TLS secret the webhook mounts is the one the chart (or cert-manager) fills
  const webhook = workloads(r).find((w) => w.metadata.name.endsWith('-webhook'))!;
  const tlsSecret = webhook.spec.template.spec.volumes.find((v: Obj) => v.name === 'tls').secret.secretName;
  const certs = of(r, 'Certificate');
  if (certs.length > 0) expect(certs[0]!.spec.secretName).toBe(tlsSecret);
  else expect(one(r, 'Secret').metadata.name).toBe(tlsSecret);
  // every object carries the common labels
  for (const d of r.docs) expect(d.metadata.labels?.['app.kubernetes.io/instance'], `${d.kind} ${d.metadata.name}`).toBe('lockmig');
}

describe('chart rendering', () => {
  it('renders the defaults into consistent, parseable objects', () => {
    const r = render();
    checkConsistency(r);
    expect(r.docs.map((d) => d.kind).sort()).toEqual([
      'ClusterRole', 'ClusterRole', 'ClusterRole', 'ClusterRole', 'ClusterRoleBinding', 'ClusterRoleBinding', 'ClusterRoleBinding', 'ClusterRoleBinding',
      'DaemonSet', 'Deployment', 'Deployment', 'Job', 'Lease', 'MutatingWebhookConfiguration', 'PodDisruptionBudget', 'Role', 'RoleBinding',
      'Secret', 'Service', 'Service', 'Service', 'ServiceAccount', 'ServiceAccount', 'ServiceAccount', 'ServiceAccount',
    ]);
    for (const w of workloads(r)) expect(w.spec.template.spec.containers[0].image).toBe('ghcr.io/lockmig/lockmig:0.1.0');
    const mwc = one(r, 'MutatingWebhookConfiguration');
    const secret = one(r, 'Secret');
    expect(mwc.webhooks[0].clientConfig.caBundle).toBe(secret.data['ca.crt']);
    const cert = Buffer.from(secret.data['tls.crt'], 'base64').toString();
    expect(cert).toContain('lockmig-webhook.lockmig-system.svc');
    const ds = one(r, 'DaemonSet');
    expect(ds.spec.template.spec.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(ds.spec.template.spec.priorityClassName).toBe('system-node-critical');
    expect(ds.spec.template.spec.containers[0].args).toContain('--storage-root=/var/lib/lockmig/checkpoints');
    expect(ds.spec.template.spec.containers[0].args).toContain('--vault-socket=/run/lockmig/vault.sock');
  });

  it('keeps an existing webhook certificate (lookup) instead of generating a new CA', () => {
    const existing = { 'ca.crt': 'Q0E=', 'tls.crt': 'Q0VSVA==', 'tls.key': 'S0VZ' };
    const r = render({}, { lookup: (av, kind, ns, name) => (av === 'v1' && kind === 'Secret' && ns === 'lockmig-system' && name === 'lockmig-webhook-tls' ? { data: existing } : {}) });
    expect(one(r, 'Secret').data).toEqual(existing);
    expect(one(r, 'MutatingWebhookConfiguration').webhooks[0].clientConfig.caBundle).toBe('Q0E=');
  });

  it('uses cert-manager when enabled: Certificate (+ self-signed Issuer), CA injection, no generated Secret', () => {
    const r = render({ webhook: { certManager: { enabled: true } } });
    checkConsistency(r);
    expect(of(r, 'Secret')).toHaveLength(0);
    const cert = one(r, 'Certificate');
    expect(one(r, 'Issuer').spec.selfSigned).toEqual({});
    expect(cert.spec.issuerRef).toEqual({ name: 'lockmig-webhook-selfsigned', kind: 'Issuer' });
    expect(cert.spec.duration).toBe('87600h');
    const mwc = one(r, 'MutatingWebhookConfiguration');
    expect(mwc.metadata.annotations['cert-manager.io/inject-ca-from']).toBe(`lockmig-system/${cert.metadata.name}`);
    expect(mwc.webhooks[0].clientConfig.caBundle).toBeUndefined();

    const withIssuer = render({ webhook: { certManager: { enabled: true, issuerRef: { name: 'corp-ca', kind: 'ClusterIssuer' } } } });
    expect(of(withIssuer, 'Issuer')).toHaveLength(0);
    expect(one(withIssuer, 'Certificate').spec.issuerRef).toEqual({ name: 'corp-ca', kind: 'ClusterIssuer' });
  });

  it('turns metrics off completely, and renders a ServiceMonitor only when asked', () => {
    const off = render({ metrics: { enabled: false } });
    checkConsistency(off);
    expect(of(off, 'Service').map((s) => s.metadata.name)).toEqual(['lockmig-webhook']);
    for (const w of workloads(off).filter((x) => !x.metadata.name.endsWith('-webhook'))) {
      const c = w.spec.template.spec.containers[0];
      expect(c.args).toContain('--metrics-addr=0');
      expect(c.ports.map((p: Obj) => p.name)).toEqual(['health']);
    }
    const sm = render({ metrics: { serviceMonitor: { enabled: true, labels: { release: 'prom' } } } });
    const mon = one(sm, 'ServiceMonitor');
    expect(mon.metadata.labels.release).toBe('prom');
    const scraped = of(sm, 'Service').filter((s) => mon.spec.selector.matchExpressions.every((e: Obj) => e.values.includes(s.metadata.labels[e.key])));
    expect(scraped.map((s) => s.metadata.name).sort()).toEqual(['lockmig-agent-metrics', 'lockmig-controller-metrics']);
    for (const s of scraped) expect(s.spec.ports.map((p: Obj) => p.name)).toContain(mon.spec.endpoints[0].port);
  });

  it('applies names, labels, image settings and scheduling values to every workload', () => {
    const r = render({
      fullnameOverride: 'lm',
      commonLabels: { team: 'storage' },
      image: { registry: 'registry.example.com', repository: 'ops/lockmig', digest: `sha256:${'a'.repeat(64)}`, pullPolicy: 'Always' },
      imagePullSecrets: [{ name: 'regcred' }],
      logLevel: 'debug',
      controller: { nodeSelector: { pool: 'system' }, podAnnotations: { 'example.com/a': '1' }, podLabels: { tier: 'control' }, watchNamespace: 'prod' },
      agent: { nodeSelector: { stateful: 'true' }, tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'db', effect: 'NoSchedule' }] },
      webhook: { replicas: 1, affinity: { nodeAffinity: {} } },
    });
    expect(r.docs.every((d) => d.metadata.labels.team === 'storage')).toBe(true);
    expect(r.docs.filter((d) => d.metadata.name && !d.metadata.name.startsWith('lm')).map((d) => `${d.kind} ${d.metadata.name}`)).toEqual([]);
    for (const w of workloads(r)) {
      const spec = w.spec.template.spec;
      expect(spec.containers[0].image).toBe(`registry.example.com/ops/lockmig@sha256:${'a'.repeat(64)}`);
      expect(spec.containers[0].imagePullPolicy).toBe('Always');
      expect(spec.imagePullSecrets).toEqual([{ name: 'regcred' }]);
      expect(spec.containers[0].env.find((e: Obj) => e.name === 'LOCKMIG_LOG_LEVEL').value).toBe('debug');
    }
    const ctl = one(r, 'Deployment', 'lm-controller').spec.template;
    expect(ctl.spec.nodeSelector).toEqual({ pool: 'system' });
    expect(ctl.metadata.annotations).toEqual({ 'example.com/a': '1' });
    expect(ctl.metadata.labels.tier).toBe('control');
    expect(ctl.spec.containers[0].args).toContain('--namespace=prod');
    const ds = one(r, 'DaemonSet').spec.template.spec;
    expect(ds.nodeSelector).toEqual({ stateful: 'true' });
    expect(ds.tolerations).toEqual([{ key: 'dedicated', operator: 'Equal', value: 'db', effect: 'NoSchedule' }]);
    expect(one(r, 'Deployment', 'lm-webhook').spec.template.spec.affinity).toEqual({ nodeAffinity: {} });
    expect(of(r, 'PodDisruptionBudget')).toHaveLength(0); // one webhook replica: a PDB would block drains
  });

  it('guards against annotated pods without the opt-in label where ValidatingAdmissionPolicy exists', () => {
    expect(of(render(), 'ValidatingAdmissionPolicy')).toHaveLength(0);
    const r = render({}, { apiVersions: [VAP] });
    const vap = one(r, 'ValidatingAdmissionPolicy');
    const binding = one(r, 'ValidatingAdmissionPolicyBinding');
    expect(binding.spec.policyName).toBe(vap.metadata.name);
    expect(binding.spec.validationActions).toEqual(['Deny']);
    expect(vap.spec.validations[0].expression).toBe(
      "!has(object.metadata.annotations) || !('lockmig.dev/restore-from' in object.metadata.annotations) || "
      + '((has(object.metadata.labels) && "lockmig.dev/restore" in object.metadata.labels && object.metadata.labels["lockmig.dev/restore"] == "true"))',
    );
    expect(of(render({ webhook: { labelGuard: { enabled: false } } }, { apiVersions: [VAP] }), 'ValidatingAdmissionPolicy')).toHaveLength(0);
  });

  it('prints the opt-in label and the next kubectl steps in NOTES.txt', () => {
    const notes = render().files.get('NOTES.txt')!;
    expect(notes).toContain('kubectl -n lockmig-system get pods -l app.kubernetes.io/instance=lockmig');
    expect(notes).toContain('lockmig.dev/restore: "true"');
    expect(notes).not.toContain('WARNING');
    expect(render({ webhook: { failurePolicy: 'Ignore' } }).files.get('NOTES.txt')).toContain('WARNING');
  });

  it('the renderer itself fails on what Helm would fail on (so a passing render means something)', () => {
    const bad = (src: string) => () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-render-'));
      try {
        fs.mkdirSync(path.join(dir, 'templates'));
        fs.copyFileSync(path.join(CHART_DIR, 'Chart.yaml'), path.join(dir, 'Chart.yaml'));
        fs.writeFileSync(path.join(dir, 'values.yaml'), 'a: 1\n');
        fs.writeFileSync(path.join(dir, 'templates/x.yaml'), src);
        renderChart(dir);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    };
    expect(bad('{{ frobnicate .Values.a }}')).toThrow(TemplateError);
    expect(bad('{{ frobnicate .Values.a }}')).toThrow(/unknown function/);
    expect(bad('{{ if .Values.a }}x')).toThrow(/missing \{\{ end \}\}/);
    expect(bad('x: {{ .Values.a }}\n  y: 2\n')).toThrow(/invalid/);
    expect(bad('{{ $nope }}')).toThrow(/undefined variable/);
    expect(bad('{{ include "nope" . }}')).toThrow(/undefined template/);
  });
});
