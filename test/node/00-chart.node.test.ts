/**
 * Install the chart as docs/install.md says (namespace labelled privileged, `helm install` with
 * only the image values changed) and check that it is healthy the way a user checks it: the
 * controller available with a leader Lease, the agent DaemonSet ready, and the webhook reached by
 * the API server through its Service (a restore pod naming a missing checkpoint is denied by it).
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { CoordinationV1Api, AppsV1Api } from '@kubernetes/client-node';
import {
  IMAGES, SYSTEM_NS, apply, chartInstalled, createNamespace, deleteNamespace, diagnostics, installChart, kc, kubectl, kubectlOk, testNode, waitFor,
} from './support/cluster.js';

const apps = kc.makeApiClient(AppsV1Api);
const coord = kc.makeApiClient(CoordinationV1Api);
let ns = '';

beforeAll(async () => {
  const upgrade = chartInstalled();
  if (!upgrade) {
    kubectl(['create', 'namespace', SYSTEM_NS]);
    kubectlOk(['label', 'namespace', SYSTEM_NS, 'pod-security.kubernetes.io/enforce=privileged', '--overwrite']);
  }
  // helm upgrade --install: on a cluster reused from an earlier run, this brings the release (and
  // its CRD, a template) up to this checkout's chart
  const s = installChart();
  console.log(`[node] helm ${upgrade ? 'upgrade' : 'install'} --wait took ${s.toFixed(1)} s`);
  ns = await createNamespace('chart');
});
afterAll(() => { if (ns) deleteNamespace(ns); });

describe('the chart on a real node', () => {
  it('runs the controller with a leader Lease, the agent DaemonSet and the webhook, all from the built image', async () => {
    onTestFailed(() => console.log(diagnostics([])));
    // as a user checks an install or upgrade: every rollout complete
    for (const w of ['deployment/lockmig-controller', 'daemonset/lockmig-agent', 'deployment/lockmig-webhook']) {
      kubectlOk(['rollout', 'status', '-n', SYSTEM_NS, w, '--timeout=180s'], { timeoutMs: 200_000 });
    }
    const dep = await apps.readNamespacedDeployment({ namespace: SYSTEM_NS, name: 'lockmig-controller' });
    expect(dep.status?.availableReplicas).toBe(dep.spec?.replicas);
    const ds = await apps.readNamespacedDaemonSet({ namespace: SYSTEM_NS, name: 'lockmig-agent' });
    expect(ds.status?.desiredNumberScheduled).toBeGreaterThan(0);
    expect(ds.status?.numberReady).toBe(ds.status?.desiredNumberScheduled);
    const wh = await apps.readNamespacedDeployment({ namespace: SYSTEM_NS, name: 'lockmig-webhook' });
    expect(wh.status?.availableReplicas).toBe(wh.spec?.replicas);
    for (const w of [dep, ds, wh]) expect(w.spec?.template.spec?.containers[0]?.image).toBe(IMAGES.lockmig);

    const lease = await waitFor('a leader in the Lease', async () => {
      const l = await coord.readNamespacedLease({ namespace: SYSTEM_NS, name: 'lockmig-controller-leader' });
      return l.spec?.holderIdentity ? l : undefined;
    });
    const controllers = kubectlOk(['get', 'pods', '-n', SYSTEM_NS, '-l', 'app.kubernetes.io/component=controller', '-o', 'jsonpath={.items[*].metadata.name}']).split(/\s+/);
    expect(controllers.some((p) => lease.spec!.holderIdentity!.startsWith(`${p}_`))).toBe(true);
    // only the chart's Lease: the controllers do not create their own
    const leases = (await coord.listNamespacedLease({ namespace: SYSTEM_NS })).items.map((l) => l.metadata!.name);
    expect(leases).toEqual(['lockmig-controller-leader']);
  });

  it('the API server reaches the webhook through its Service: a restore pod naming a missing checkpoint is denied with a clear message', async () => {
    onTestFailed(() => console.log(diagnostics([ns])));
    const node = await testNode();
    const cfg = JSON.parse(kubectlOk(['get', 'mutatingwebhookconfiguration', 'lockmig-webhook', '-o', 'json'])) as { webhooks: { clientConfig: { service?: { name: string; namespace: string } }; failurePolicy: string }[] };
    expect(cfg.webhooks[0]!.clientConfig.service).toMatchObject({ name: 'lockmig-webhook', namespace: SYSTEM_NS });
    expect(cfg.webhooks[0]!.failurePolicy).toBe('Fail');
    const pod = {
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name: 'orphan', namespace: ns, labels: { 'lockmig.dev/restore': 'true' }, annotations: { 'lockmig.dev/restore-from': 'no-such-checkpoint' } },
      spec: { nodeSelector: { 'kubernetes.io/hostname': node }, containers: [{ name: 'c', image: IMAGES.workload, command: ['sleep', '1'] }] },
    };
    const r = kubectl(['apply', '-f', '-'], { input: JSON.stringify(pod) });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('admission webhook "restore.lockmig.dev" denied the request');
    expect(r.stderr).toContain('LockCheckpoint "no-such-checkpoint" not found');
    // a pod that does not opt in is admitted unchanged
    apply([{ ...pod, metadata: { name: 'plain', namespace: ns } }]);
    const plain = JSON.parse(kubectlOk(['get', 'pod', '-n', ns, 'plain', '-o', 'json'])) as { spec: { containers: { command: string[] }[]; readinessGates?: unknown } };
    expect(plain.spec.containers[0]!.command).toEqual(['sleep', '1']);
    expect(plain.spec.readinessGates).toBeUndefined();
  });

  it('serves the LockCheckpoint API with its printer columns and explain text; a checkpoint of a missing pod waits, named as such', async () => {
    expect(kubectlOk(['explain', 'lockcheckpoint.spec.sourcePodName'])).toMatch(/pod/i);
    apply([{ apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name: 'nothing-yet', namespace: ns }, spec: { sourcePodName: 'not-there' } }]);
    const row = await waitFor('a Pending row', () => {
      const out = kubectlOk(['get', 'lckpt', '-n', ns, '-o', 'wide']);
      return /nothing-yet\s+Pending\s+not-there/.test(out) ? out : undefined;
    });
    expect(row.split('\n')[0]).toMatch(/^NAME\s+PHASE\s+SOURCE\s+NODE\s+TARGET\s+LOCKS\s+ARCHIVE\s+REASON\s+AGE/);
    expect(row).toContain('SourcePodNotFound');
    kubectlOk(['delete', 'lckpt', '-n', ns, 'nothing-yet', '--wait=true', '--timeout=60s']);
  });
});
