/**
 * Checks on the objects `helm template` renders from charts/lockmig: finders and the
 * cross-references the API server and the kubelet will need (service accounts, roles, secrets,
 * services, ports, selectors, volumes all refer to things that exist).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { expect } from 'vitest';
import type { Manifest } from '../support/envtest/index.js';

export type Obj = Record<string, any>;

export const of = (docs: readonly Manifest[], kind: string): Obj[] => docs.filter((d) => d.kind === kind);
export function one(docs: readonly Manifest[], kind: string, name?: string): Obj {
  const all = of(docs, kind).filter((d) => name === undefined || d.metadata.name === name);
  expect(all, `${kind} ${name ?? ''}`).toHaveLength(1);
  return all[0]!;
}
export const workloads = (docs: readonly Manifest[]): Obj[] => docs.filter((d) => d.kind === 'Deployment' || d.kind === 'DaemonSet');
export const matches = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);
export const container = (w: Obj): Obj => w.spec.template.spec.containers[0];

const CLUSTER_SCOPED = new Set(['ClusterRole', 'ClusterRoleBinding', 'MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding', 'CustomResourceDefinition']);

/** Cross-references every rendering must satisfy (release `release` in namespace `ns`). */
export function checkConsistency(docs: readonly Manifest[], o: { ns?: string; release?: string; externalServiceAccounts?: readonly string[] } = {}): void {
  const ns = o.ns ?? 'lockmig-system';
  const sas = new Set([...of(docs, 'ServiceAccount').map((s) => s.metadata.name), ...(o.externalServiceAccounts ?? [])]);
  for (const d of docs) {
    if (CLUSTER_SCOPED.has(d.kind)) expect(d.metadata.namespace, `${d.kind} ${d.metadata.name}`).toBeUndefined();
    else expect(d.metadata.namespace, `${d.kind} ${d.metadata.name}`).toBe(ns);
    // every object carries the common labels (but the CRD, a verbatim copy of crds/, kept on uninstall)
    if (d.kind === 'CustomResourceDefinition') {
      expect(d.metadata.annotations?.['helm.sh/resource-policy'], 'the CRD survives helm uninstall').toBe('keep');
      continue;
    }
    expect(d.metadata.labels?.['app.kubernetes.io/instance'], `${d.kind} ${d.metadata.name}`).toBe(o.release ?? 'lockmig');
    expect(d.metadata.labels?.['app.kubernetes.io/managed-by'], `${d.kind} ${d.metadata.name}`).toBe('Helm');
  }
  for (const j of of(docs, 'Job')) {
    expect(sas.has(j.spec.template.spec.serviceAccountName), `Job ${j.metadata.name} service account`).toBe(true);
  }
  for (const w of workloads(docs)) {
    const pod = w.spec.template;
    expect(matches(w.spec.selector.matchLabels, pod.metadata.labels), `${w.metadata.name} selector`).toBe(true);
    expect(sas.has(pod.spec.serviceAccountName), `${w.metadata.name} service account ${pod.spec.serviceAccountName}`).toBe(true);
    const c = container(w);
    const ports = new Set((c.ports ?? []).map((p: Obj) => p.name));
    for (const probe of [c.livenessProbe, c.readinessProbe]) {
      const port = probe.httpGet?.port ?? probe.tcpSocket?.port;
      expect(ports.has(port), `${w.metadata.name} probe port ${port}`).toBe(true);
    }
    const volumes = new Set((pod.spec.volumes ?? []).map((v: Obj) => v.name));
    for (const m of c.volumeMounts ?? []) expect(volumes.has(m.name), `${w.metadata.name} mount ${m.name}`).toBe(true);
  }
  for (const s of of(docs, 'Service')) {
    const backends = workloads(docs).filter((w) => matches(s.spec.selector, w.spec.template.metadata.labels));
    expect(backends.length, `Service ${s.metadata.name} selects a workload`).toBe(1);
    const ports = new Set(container(backends[0]!).ports.map((p: Obj) => p.name));
    for (const p of s.spec.ports) expect(ports.has(p.targetPort), `Service ${s.metadata.name} targetPort ${p.targetPort}`).toBe(true);
  }
  const roles = new Set([...of(docs, 'ClusterRole'), ...of(docs, 'Role')].map((x) => `${x.kind}/${x.metadata.name}`));
  for (const b of [...of(docs, 'ClusterRoleBinding'), ...of(docs, 'RoleBinding')]) {
    expect(roles.has(`${b.roleRef.kind}/${b.roleRef.name}`), `${b.kind} ${b.metadata.name} roleRef`).toBe(true);
    for (const s of b.subjects) {
      expect(s.namespace).toBe(ns);
      expect(sas.has(s.name), `${b.metadata.name} subject ${s.name}`).toBe(true);
    }
  }
  for (const pdb of of(docs, 'PodDisruptionBudget')) {
    expect(workloads(docs).filter((w) => matches(pdb.spec.selector.matchLabels, w.spec.template.metadata.labels)), `PDB ${pdb.metadata.name}`).toHaveLength(1);
  }
  // every webhook registration points at the webhook Service, which serves the Deployment's https port
  for (const reg of [...of(docs, 'MutatingWebhookConfiguration'), ...of(docs, 'ValidatingWebhookConfiguration')]) {
    for (const w of reg.webhooks) {
      const ref = w.clientConfig.service;
      expect(ref.namespace, `${reg.metadata.name} ${w.name}`).toBe(ns);
      const svc = one(docs, 'Service', ref.name);
      expect(svc.spec.ports.find((p: Obj) => p.port === ref.port)?.targetPort, `${reg.metadata.name} ${w.name}`).toBe('https');
      expect(['/mutate-pods', '/stop-pods'], `${w.name} path`).toContain(ref.path);
    }
  }
  // the TLS secret the webhook mounts is the one the chart (or cert-manager) fills
  const webhook = workloads(docs).find((w) => w.metadata.labels['app.kubernetes.io/component'] === 'webhook')!;
  const tlsSecret = webhook.spec.template.spec.volumes.find((v: Obj) => v.name === 'tls').secret.secretName;
  const certs = of(docs, 'Certificate');
  if (certs.length > 0) expect(certs[0]!.spec.secretName).toBe(tlsSecret);
  else expect(one(docs, 'Secret').metadata.name).toBe(tlsSecret);
  // the guard policy and its binding belong together
  for (const b of of(docs, 'ValidatingAdmissionPolicyBinding')) expect(one(docs, 'ValidatingAdmissionPolicy', b.spec.policyName)).toBeDefined();
}

/** The chart-generated Secret: its CA signed its certificate, which names the webhook Service. */
export function checkGeneratedTls(docs: readonly Manifest[], serviceDns: string): { ca: X509Certificate; cert: X509Certificate } {
  const secret = one(docs, 'Secret');
  expect(secret.type).toBe('kubernetes.io/tls');
  const pem = (k: string) => Buffer.from(secret.data[k], 'base64').toString('utf8');
  const ca = new X509Certificate(pem('ca.crt'));
  const cert = new X509Certificate(pem('tls.crt'));
  expect(cert.verify(ca.publicKey)).toBe(true);
  expect(cert.checkIssued(ca)).toBe(true);
  expect(cert.subjectAltName).toContain(`DNS:${serviceDns}`);
  expect(cert.checkPrivateKey(createPrivateKey(pem('tls.key')))).toBe(true);
  const registrations = docs.filter((d) => d.kind === 'MutatingWebhookConfiguration' || d.kind === 'ValidatingWebhookConfiguration');
  expect(registrations.length).toBeGreaterThan(0);
  for (const r of registrations) for (const w of (r as Obj).webhooks) expect(w.clientConfig.caBundle, `${r.metadata.name} ${w.name}`).toBe(secret.data['ca.crt']);
  return { ca, cert };
}
