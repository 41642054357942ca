/** The values variations the chart documents, shared by helm.test.ts and helm-server.test.ts. */
import YAML from 'yaml';

/** The documented variations (docs/install.md "Common variations", the values file, README values table). */
export const VARIATIONS: Record<string, Record<string, unknown>> = {
  defaults: {},
  'private registry, pinned digest, pull secret': { image: { registry: 'registry.example.com', repository: 'ops/lockmig', digest: `sha256:${'a'.repeat(64)}` }, imagePullSecrets: [{ name: 'regcred' }] },
  'cert-manager with a self-signed Issuer': { webhook: { certManager: { enabled: true } } },
  'cert-manager with a ClusterIssuer': { webhook: { certManager: { enabled: true, issuerRef: { name: 'my-ca', kind: 'ClusterIssuer' } } } },
  'namespaces opt in by label': { webhook: { namespaceSelector: { matchLabels: { 'lockmig.dev/enabled': 'true' }, matchExpressions: [] } } },
  'ServiceMonitor': { metrics: { serviceMonitor: { enabled: true, labels: { release: 'prometheus' } } } },
  'agents on stateful nodes only': { agent: { nodeSelector: { 'node-role.example.com/stateful': 'true' } } },
  'the values file of docs/install.md': YAML.parse(`image:\n  registry: registry.example.com\n  repository: ops/lockmig\n  tag: "0.1.0"\nlogLevel: info\nstorage:\n  root: /var/lib/lockmig/checkpoints\nwebhook:\n  failurePolicy: Fail\n  timeoutSeconds: 10\ncontroller:\n  resources:\n    requests: {cpu: 50m, memory: 96Mi}\n    limits: {memory: 256Mi}\n`) as Record<string, unknown>,
  'metrics off': { metrics: { enabled: false } },
  'one webhook replica, failurePolicy Ignore': { webhook: { replicas: 1, failurePolicy: 'Ignore' } },
  'no leader election, one watched namespace': { controller: { replicas: 1, leaderElect: false, watchNamespace: 'prod' } },
  'CRD managed elsewhere, no uninstall hook, no stop webhook': { crds: { install: false }, cleanupOnUninstall: { enabled: false }, webhook: { stopHook: { enabled: false } } },
  'existing service accounts': { controller: { serviceAccount: { create: false, name: 'ctl' } }, agent: { serviceAccount: { create: false, name: 'agt' } }, webhook: { serviceAccount: { create: false, name: 'hook' } } },
  'names, labels and scheduling': {
    fullnameOverride: 'lm', commonLabels: { team: 'storage' }, logLevel: 'debug', image: { pullPolicy: 'Always' },
    controller: { nodeSelector: { pool: 'system' }, podAnnotations: { 'example.com/a': '1' }, podLabels: { tier: 'control' } },
    agent: { tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'db', effect: 'NoSchedule' }], updateStrategy: { type: 'OnDelete' } },
    webhook: { affinity: { nodeAffinity: {} }, tls: { validityDays: 365 } },
  },
};

