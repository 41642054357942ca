/**
 * The Helm chart, checked without helm: Chart.yaml, values.yaml against values.schema.json
 * (and the schema rejecting bad values), every value a template reads exists, blocks are
 * balanced, every manifest has an expected apiVersion/kind, fixed security-relevant fields, and
 * the chart's CRD is byte-identical to the top-level one.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import Ajv from 'ajv';
import YAML from 'yaml';
import { REPO_ROOT } from '../helpers/env.js';
import {
  CHART_DIR, PLACEHOLDER, blockBalance, hasPath, readChartFile, templateDocs, templateFiles, valuesPaths, type Manifest,
} from './chart-files.js';

const values = YAML.parse(readChartFile('values.yaml')) as Record<string, any>;
const schema = JSON.parse(readChartFile('values.schema.json')) as object;

function validator() {
  // allowUnionTypes: resource quantities are strings or numbers ("500m", 1).
  const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
  return ajv.compile(schema);
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

function docsByKind(file: string): Map<string, Manifest> {
  return new Map(templateDocs(file).map((d) => [String(d.kind), d]));
}

describe('Chart.yaml', () => {
  const chart = YAML.parse(readChartFile('Chart.yaml')) as Record<string, unknown>;
  it('is a v2 application chart named lockmig with semver versions', () => {
    expect(chart.apiVersion).toBe('v2');
    expect(chart.name).toBe('lockmig');
    expect(chart.type).toBe('application');
    expect(String(chart.version)).toMatch(/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/);
  });
  it('requires Kubernetes >= 1.25 (CEL rules in the CRD), pre-releases included', () => {
    expect(chart.kubeVersion).toBe('>=1.25.0-0');
    expect(readChartFile('Chart.yaml')).toMatch(/CEL/);
  });
  it('ships the version of the package as appVersion (the default image tag)', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(chart.appVersion).toBe(pkg.version);
  });
});

describe('values.yaml and values.schema.json', () => {
  it('the schema is draft-07 and strict at the top level', () => {
    expect((schema as any).$schema).toBe('http://json-schema.org/draft-07/schema#');
    expect((schema as any).additionalProperties).toBe(false);
  });
  it('values.yaml validates', () => {
    const v = validator();
    const ok = v(values);
    expect(v.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
  });

  const bad: Array<[string, (v: any) => void, RegExp]> = [
    ['an unknown top-level key (typo)', (v) => { v.imagee = {}; }, /additional properties/],
    ['an unknown key inside a component', (v) => { v.controller.replica = 3; }, /additional properties/],
    ['a failurePolicy the API server does not know', (v) => { v.webhook.failurePolicy = 'Retry'; }, /allowed values/],
    ['a webhook timeout above the API server maximum of 30 s', (v) => { v.webhook.timeoutSeconds = 45; }, /<= 30/],
    ['replicas as a string', (v) => { v.controller.replicas = '2'; }, /integer/],
    ['a relative storage root', (v) => { v.storage.root = 'var/lib/lockmig'; }, /pattern/],
    ['a storage root escaping with ..', (v) => { v.storage.root = '/var/lib/../../etc'; }, /must NOT be valid/],
    ['a port out of range', (v) => { v.metrics.port = 70000; }, /<= 65535/],
    ['an unknown pull policy', (v) => { v.image.pullPolicy = 'Sometimes'; }, /allowed values/],
    ['a malformed digest', (v) => { v.image.digest = 'latest'; }, /pattern/],
    ['a log level winston does not have', (v) => { v.logLevel = 'trace'; }, /allowed values/],
    ['metrics.enabled as a string', (v) => { v.metrics.enabled = 'yes'; }, /boolean/],
    ['a label value that is not a string', (v) => { v.commonLabels = { team: 7 }; }, /string/],
    ['an imagePullSecret without a name', (v) => { v.imagePullSecrets = [{}]; }, /required property 'name'/],
    ['a cert-manager issuer of an unknown kind', (v) => { v.webhook.certManager.issuerRef = { name: 'x', kind: 'Vault' }; }, /allowed values/],
    ['a missing required section', (v) => { delete v.agent; }, /required property 'agent'/],
  ];
  it.each(bad)('rejects %s', (_name, mutate, message) => {
    const v = validator();
    const copy = clone(values);
    mutate(copy);
    expect(v(copy)).toBe(false);
    expect(JSON.stringify(v.errors)).toMatch(message);
  });

  it('accepts the overrides the README documents', () => {
    const v = validator();
    const copy = clone(values);
    copy.image = { registry: 'registry.example.com', repository: 'ops/lockmig', tag: '0.1.0', digest: `sha256:${'a'.repeat(64)}`, pullPolicy: 'Always' };
    copy.imagePullSecrets = [{ name: 'regcred' }];
    copy.webhook.certManager = { enabled: true, issuerRef: { name: 'ca', kind: 'ClusterIssuer' } };
    copy.webhook.namespaceSelector = { matchLabels: { 'lockmig.dev/enabled': 'true' } };
    copy.metrics.serviceMonitor = { enabled: true, interval: '15s', scrapeTimeout: '5s', labels: { release: 'prom' } };
    copy.agent.updateStrategy = { type: 'OnDelete' };
    copy.controller.resources = { requests: { cpu: 0.1, memory: '128Mi' } };
    expect(v(copy), JSON.stringify(v.errors)).toBe(true);
  });
});

describe('templates', () => {
  const files = templateFiles();

  it('has the templates of every component', () => {
    expect(files).toEqual(expect.arrayContaining([
      '_helpers.tpl', 'NOTES.txt', 'controller-deployment.yaml', 'controller-rbac.yaml', 'agent-daemonset.yaml',
      'agent-rbac.yaml', 'webhook-deployment.yaml', 'webhook-service.yaml', 'webhook-mutatingwebhookconfiguration.yaml',
      'webhook-rbac.yaml', 'webhook-certmanager.yaml', 'servicemonitor.yaml',
    ]));
  });

  it.each(files)('%s reads only values that exist in values.yaml', (file) => {
    const text = fs.readFileSync(path.join(CHART_DIR, 'templates', file), 'utf8');
    const missing = valuesPaths(text).filter((p) => !hasPath(values, p));
    expect(missing).toEqual([]);
  });

  it.each(files)('%s has balanced {{ if/with/range/define }} … {{ end }} blocks', (file) => {
    const b = blockBalance(fs.readFileSync(path.join(CHART_DIR, 'templates', file), 'utf8'));
    expect(b.problems).toEqual([]);
    expect(b.opens).toBe(b.ends);
  });

  const expected: Record<string, string[]> = {
    'controller-deployment.yaml': ['apps/v1 Deployment'],
    'controller-service.yaml': ['v1 Service'],
    'controller-serviceaccount.yaml': ['v1 ServiceAccount'],
    'controller-rbac.yaml': ['rbac.authorization.k8s.io/v1 ClusterRole', 'rbac.authorization.k8s.io/v1 ClusterRoleBinding', 'coordination.k8s.io/v1 Lease', 'rbac.authorization.k8s.io/v1 Role', 'rbac.authorization.k8s.io/v1 RoleBinding'],
    'agent-daemonset.yaml': ['apps/v1 DaemonSet'],
    'agent-service.yaml': ['v1 Service'],
    'agent-serviceaccount.yaml': ['v1 ServiceAccount'],
    'agent-rbac.yaml': ['rbac.authorization.k8s.io/v1 ClusterRole', 'rbac.authorization.k8s.io/v1 ClusterRoleBinding'],
    'webhook-deployment.yaml': ['apps/v1 Deployment'],
    'webhook-service.yaml': ['v1 Service'],
    'webhook-pdb.yaml': ['policy/v1 PodDisruptionBudget'],
    'restore-label-guard.yaml': ['admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy', 'admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding'],
    'webhook-serviceaccount.yaml': ['v1 ServiceAccount'],
    'webhook-rbac.yaml': ['rbac.authorization.k8s.io/v1 ClusterRole', 'rbac.authorization.k8s.io/v1 ClusterRoleBinding'],
    'webhook-certmanager.yaml': ['cert-manager.io/v1 Issuer', 'cert-manager.io/v1 Certificate'],
    'webhook-mutatingwebhookconfiguration.yaml': ['v1 Secret', 'admissionregistration.k8s.io/v1 MutatingWebhookConfiguration'],
    'servicemonitor.yaml': ['monitoring.coreos.com/v1 ServiceMonitor'],
    'cleanup-rbac.yaml': ['v1 ServiceAccount', 'rbac.authorization.k8s.io/v1 ClusterRole', 'rbac.authorization.k8s.io/v1 ClusterRoleBinding'],
    'cleanup-job.yaml': ['batch/v1 Job'],
    'crds.yaml': [],
  };
  it('every manifest template is known and yields exactly the expected apiVersion/kind pairs', () => {
    const manifests = files.filter((f) => f.endsWith('.yaml'));
    expect(manifests.sort()).toEqual(Object.keys(expected).sort());
    for (const f of manifests) {
      const kinds = templateDocs(f).map((d) => `${d.apiVersion} ${d.kind}`);
      expect(kinds, f).toEqual(expected[f]);
    }
  });

  it('namespaced resources go to the release namespace and everything carries the common labels', () => {
    for (const f of Object.keys(expected)) {
      const raw = fs.readFileSync(path.join(CHART_DIR, 'templates', f), 'utf8');
      const docsCount = templateDocs(f).length;
      expect((raw.match(/include "lockmig\.labels" \. \| nindent 4/g) ?? []).length, f).toBe(docsCount);
      for (const d of templateDocs(f)) {
        const clusterScoped = ['ClusterRole', 'ClusterRoleBinding', 'MutatingWebhookConfiguration', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding'].includes(String(d.kind));
        if (clusterScoped) expect(d.metadata?.namespace, `${f} ${d.kind}`).toBeUndefined();
        else expect(d.metadata?.namespace, `${f} ${d.kind}`).toBe(PLACEHOLDER);
      }
    }
  });
});

describe('controller Deployment', () => {
  const dep = docsByKind('controller-deployment.yaml').get('Deployment') as any;
  const c = dep.spec.template.spec.containers[0];
  it('runs `lockmig controller` with leader election, health and metrics addresses', () => {
    expect(c.args[0]).toBe('controller');
    expect(c.args).toContain('--leader-elect');
    expect(c.args.some((a: string) => a.startsWith('--health-addr=:'))).toBe(true);
    expect(c.args.some((a: string) => a.startsWith('--metrics-addr=:'))).toBe(true);
    expect(values.controller.replicas).toBe(2);
    expect(values.controller.leaderElect).toBe(true);
  });
  it('probes /healthz and /readyz on the health port', () => {
    expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'health' });
    expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'health' });
    expect(c.ports.map((p: any) => p.name)).toEqual(['health', 'metrics']);
  });
  it('defaults to non-root, read-only root fs, no capabilities, RuntimeDefault seccomp (controller and webhook)', () => {
    for (const comp of ['controller', 'webhook']) {
      const sc = values[comp].securityContext;
      expect(sc.readOnlyRootFilesystem).toBe(true);
      expect(sc.allowPrivilegeEscalation).toBe(false);
      expect(sc.runAsNonRoot).toBe(true);
      expect(sc.capabilities.drop).toEqual(['ALL']);
      expect(sc.seccompProfile.type).toBe('RuntimeDefault');
      const psc = values[comp].podSecurityContext;
      expect(psc.runAsNonRoot).toBe(true);
      expect(psc.runAsUser).toBe(65532);
      expect(psc.seccompProfile.type).toBe('RuntimeDefault');
    }
  });
});

describe('agent DaemonSet', () => {
  const ds = docsByKind('agent-daemonset.yaml').get('DaemonSet') as any;
  const pod = ds.spec.template.spec;
  const c = pod.containers[0];
  it('is privileged, root, in the host pid namespace', () => {
    expect(pod.hostPID).toBe(true);
    expect(c.securityContext.privileged).toBe(true);
    expect(c.securityContext.runAsUser).toBe(0);
  });
  it('gets NODE_NAME from the downward API and passes it to --node', () => {
    const env = c.env.find((e: any) => e.name === 'NODE_NAME');
    expect(env.valueFrom.fieldRef.fieldPath).toBe('spec.nodeName');
    expect(c.args).toContain('--node=$(NODE_NAME)');
    for (const flag of ['--storage-root=', '--vault-socket=', '--shim-dir=', '--health-addr=:']) {
      expect(c.args.some((a: string) => a.startsWith(flag)), flag).toBe(true);
    }
  });
  it('mounts images, the vault socket dir and the shim dir from the host, and no cgroup fs (it reads /proc/<pid>/cgroup)', () => {
    const byName = new Map<string, any>(pod.volumes.map((v: any) => [v.name, v]));
    for (const name of ['checkpoints', 'vault', 'shim']) expect(byName.get(name)?.hostPath, name).toBeDefined();
    // A mountPropagation on a host path that is not a shared mount stops the container from starting
    // (CreateContainerError on nodes whose /sys/fs/cgroup is private), and nothing needs the cgroup fs.
    expect(pod.volumes.some((v: any) => v.hostPath?.path?.startsWith('/sys/fs/cgroup'))).toBe(false);
    expect(c.volumeMounts.some((m: any) => m.mountPropagation !== undefined)).toBe(false);
    expect(values.storage.root).toBe('/var/lib/lockmig/checkpoints');
  });
  it('runs on every node by default, as system-node-critical, with a rolling update strategy', () => {
    expect(values.agent.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(values.agent.priorityClassName).toBe('system-node-critical');
    expect(values.agent.updateStrategy.type).toBe('RollingUpdate');
    const raw = fs.readFileSync(path.join(CHART_DIR, 'templates/agent-daemonset.yaml'), 'utf8');
    expect(raw).toMatch(/priorityClassName: \{\{ \. \}\}/);
    expect(raw).toMatch(/with \.Values\.agent\.tolerations/);
  });
});

describe('webhook registration', () => {
  const docs = docsByKind('webhook-mutatingwebhookconfiguration.yaml');
  const mwc = docs.get('MutatingWebhookConfiguration') as any;
  const wh = mwc.webhooks[0];
  it('speaks admission/v1, declares its side effects and takes policy and timeout from values', () => {
    expect(wh.admissionReviewVersions).toEqual(['v1']);
    expect(wh.sideEffects).toBe('NoneOnDryRun');
    expect(wh.failurePolicy).toBe(PLACEHOLDER);
    expect(wh.timeoutSeconds).toBe(PLACEHOLDER);
    expect(values.webhook.failurePolicy).toBe('Fail');
    const raw = fs.readFileSync(path.join(CHART_DIR, 'templates/webhook-mutatingwebhookconfiguration.yaml'), 'utf8');
    expect(raw).toMatch(/failurePolicy: \{\{ \.Values\.webhook\.failurePolicy \}\}/);
    expect(raw).toMatch(/timeoutSeconds: \{\{ \.Values\.webhook\.timeoutSeconds \}\}/);
  });
  it('only sees pod CREATEs of opted-in pods outside kube-system and its own namespace', () => {
    expect(wh.rules).toEqual([{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'], scope: 'Namespaced' }]);
    expect(values.webhook.objectSelector).toEqual({ matchLabels: { 'lockmig.dev/restore': 'true' } });
    const ex = wh.namespaceSelector.matchExpressions[0];
    expect(ex.key).toBe('kubernetes.io/metadata.name');
    expect(ex.operator).toBe('NotIn');
    expect(ex.values).toContain('kube-system');
  });
  it('uses the chart-generated CA by default (genCA + genSignedCert, kept with lookup) or cert-manager', () => {
    const raw = fs.readFileSync(path.join(CHART_DIR, 'templates/webhook-mutatingwebhookconfiguration.yaml'), 'utf8');
    expect(raw).toMatch(/genCA/);
    expect(raw).toMatch(/genSignedCert/);
    expect(raw).toMatch(/lookup "v1" "Secret"/);
    expect(raw).toMatch(/cert-manager\.io\/inject-ca-from/);
    expect(docs.get('Secret')?.type).toBe('kubernetes.io/tls');
    expect(wh.clientConfig.service.port).toBe(443);
    const cert = docsByKind('webhook-certmanager.yaml').get('Certificate') as any;
    expect(cert.spec.dnsNames).toHaveLength(4);
  });
  it('the webhook Deployment mounts the TLS secret it is told to serve', () => {
    const dep = docsByKind('webhook-deployment.yaml').get('Deployment') as any;
    const c = dep.spec.template.spec.containers[0];
    expect(c.args[0]).toBe('webhook');
    expect(c.args).toContain('--tls-cert=/etc/lockmig/tls/tls.crt');
    expect(c.args).toContain('--tls-key=/etc/lockmig/tls/tls.key');
    expect(c.volumeMounts.find((m: any) => m.name === 'tls').mountPath).toBe('/etc/lockmig/tls');
    expect(c.livenessProbe.httpGet).toEqual({ scheme: 'HTTPS', path: '/healthz', port: 'https' });
    expect(c.readinessProbe.httpGet).toEqual({ scheme: 'HTTPS', path: '/readyz', port: 'https' });
    for (const flag of ['--shim-dir=', '--vault-socket-dir=', '--storage-root=']) expect(c.args.some((a: string) => a.startsWith(flag)), flag).toBe(true);
  });
  it('registers the path the webhook serves', () => {
    expect(wh.clientConfig.service.path).toBe('/mutate-pods');
  });
});

describe('NOTES.txt', () => {
  it('tells the user the next kubectl step', () => {
    const notes = readChartFile('templates/NOTES.txt');
    expect(notes).toMatch(/kubectl .*get pods/);
    expect(notes).toMatch(/kind: LockCheckpoint/);
    expect(notes).toMatch(/lockmig\.dev\/restore-from/);
  });
});

describe('CRD', () => {
  it('the chart ships the top-level CRD byte for byte', () => {
    const top = path.join(REPO_ROOT, 'crds/lockmig.dev_lockcheckpoints.yaml');
    const inChart = path.join(CHART_DIR, 'files/crds/lockmig.dev_lockcheckpoints.yaml');
    expect(fs.existsSync(top), `${top} is missing`).toBe(true);
    expect(fs.existsSync(inChart), `${inChart} is missing: run scripts/sync-chart-crds.sh`).toBe(true);
    const a = fs.readFileSync(top);
    const b = fs.readFileSync(inChart);
    expect(b.equals(a), 'charts/lockmig/files/crds differs from crds/: run scripts/sync-chart-crds.sh').toBe(true);
    expect(fs.readdirSync(path.join(CHART_DIR, 'files/crds'))).toEqual(fs.readdirSync(path.join(REPO_ROOT, 'crds')).filter((f) => f.endsWith('.yaml')));
    // not in crds/, which Helm installs once and never upgrades
    expect(fs.existsSync(path.join(CHART_DIR, 'crds'))).toBe(false);
  });
});
