/**
 * The Helm chart's files, checked without helm (runs everywhere): Chart.yaml, values.yaml against
 * values.schema.json with ajv (an independent JSON Schema implementation; helm enforces the same
 * schema in helm.test.ts), and the chart's CRD byte-identical to the top-level one. What the
 * templates render is checked with the real helm: helm.test.ts, helm-server.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import Ajv from 'ajv';
import YAML from 'yaml';
import { REPO_ROOT } from '../helpers/env.js';
import { CHART_DIR } from '../support/envtest/index.js';

const readChartFile = (rel: string): string => fs.readFileSync(path.join(CHART_DIR, rel), 'utf8');

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
