/**
 * Two controller replicas with --leader-elect against a real kube-apiserver (a real
 * coordination.k8s.io/v1 Lease, real client-node), both acting as the chart's controller
 * ServiceAccount (its leader-election Role in the release namespace): only the leader reconciles;
 * when it shuts down it releases the Lease and the other replica takes over and resumes from
 * status. Fencing: Lease renewals failing behind the fault proxy, and a real apiserver restart.
 * Plus the CLI: `lockmig controller` as a process, with SIGTERM handling.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { CoordinationV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { startController, type RunningController } from '../../src/controller/main.js';
import { GROUP, LABEL_NODE, PLURAL, VERSION } from '../../src/api/lockcheckpoint.js';
import { silentLogger } from '../../src/log/logger.js';
import { CLI, missing } from '../helpers/env.js';
import {
  chartIdentity, createTestNamespace, installCrd, kubectl, ok, startApiServer, startFaultProxy, type FaultProxy, type KubeApiServer,
} from '../support/envtest/index.js';

const skip = missing({ k8s: true }, 'leader election on a real API server');
let NS = '';
const CK = () => ({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS });
let api: KubeApiServer;
let custom: CustomObjectsApi;
let core: CoreV1Api;

/**
 * An installation as the chart makes it, in a release namespace of its own: the controller's
 * ServiceAccount and RBAC, and the Lease the chart creates (the controllers only get and update it,
 * by name: --lease-create=false).
 */
async function install(prefix: string): Promise<{ ns: string; id: { kubeConfig: KubeConfig; kubeconfigPath: string }; lease: string }> {
  const ns = (await createTestNamespace(api.kubeConfig, { prefix })).name;
  const id = await chartIdentity(api, 'controller', ns);
  const lease = id.objects.find((o) => o.kind === 'Lease')?.metadata.name;
  if (!lease) throw new Error('the chart renders no Lease for the controller');
  return { ns, id, lease };
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function reconciles(reg: Registry): Promise<number> {
  const m = await reg.getSingleMetric('lockmig_controller_reconciles_total')?.get();
  return (m?.values ?? []).reduce((a, v) => a + v.value, 0);
}

async function makePod(name: string) {
  const p = await core.createNamespacedPod({ namespace: NS, body: { metadata: { name }, spec: { nodeName: 'node-a', containers: [{ name: 'c', image: 'x' }] } } });
  await core.replaceNamespacedPodStatus({ name, namespace: NS, body: { ...p, status: { phase: 'Running' } } });
}

async function makeCk(name: string, pod: string) {
  await custom.createNamespacedCustomObject({ ...CK(), body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name }, spec: { sourcePodName: pod } } });
}

const phaseOf = async (name: string) => ((await custom.getNamespacedCustomObject({ ...CK(), name })) as { status?: { phase?: string } }).status?.phase;

beforeAll(async () => {
  if (skip) return;
  api = await startApiServer();
  await installCrd(api);
  custom = api.kubeConfig.makeApiClient(CustomObjectsApi);
  core = api.kubeConfig.makeApiClient(CoreV1Api);
  NS = (await createTestNamespace(api.kubeConfig, { prefix: 'le' })).name;
}, 120_000);

afterAll(async () => {
  await api?.stop();
});

describe.skipIf(skip)('leader election with two controller replicas', () => {
  it('only the leader reconciles; on shutdown it releases the Lease and the other takes over', async () => {
    const replicas: { ac: AbortController; reg: Registry; run: RunningController }[] = [];
    const inst = await install('lockmig-a');
    for (const name of ['replica-a', 'replica-b']) {
      const ac = new AbortController();
      const reg = new Registry();
      const run = await startController({
        kubeConfig: inst.id.kubeConfig, logger: silentLogger(), leaderElect: true, leaseNamespace: inst.ns, leaseName: inst.lease, leaseCreate: false, identity: name, registry: reg,
        leaseDurationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 300, config: { agentAcceptTimeoutMs: 60_000 },
      }, ac.signal);
      replicas.push({ ac, reg, run });
      if (name === 'replica-a') await waitFor('a leads', () => (run.elector?.isLeader ? true : undefined));
    }
    const [a, b] = replicas as [typeof replicas[0], typeof replicas[0]];
    const lease = await api.kubeConfig.makeApiClient(CoordinationV1Api).readNamespacedLease({ name: inst.lease, namespace: inst.ns });
    expect(lease.spec?.holderIdentity).toBe('replica-a');
    // MicroTime as stored by the server (read by kubectl, not by our client)
    const raw = ok(await kubectl(['get', 'lease', inst.lease, '-n', inst.ns, '-o', 'jsonpath={.spec.renewTime}'], { kubeconfig: api.kubeconfigPath }), 'kubectl get lease');
    expect(raw).toMatch(/\.\d{6}Z$/);

    await makePod('p1');
    await makeCk('c1', 'p1');
    await waitFor('c1 dispatched', async () => ((await phaseOf('c1')) === 'Dumping' ? true : undefined));
    await new Promise((r) => setTimeout(r, 500));
    expect(b.run.elector?.isLeader).toBe(false);
    expect(await reconciles(a.reg)).toBeGreaterThan(0);
    expect(await reconciles(b.reg)).toBe(0);

    const before = (await custom.getNamespacedCustomObject({ ...CK(), name: 'c1' })) as { metadata: { resourceVersion: string }; status: { dispatchTime: string } };
    // leader goes away gracefully: released lease, b takes over well before the lease would expire
    const t0 = Date.now();
    a.ac.abort();
    await a.run.done;
    await waitFor('b leads', () => (b.run.elector?.isLeader ? true : undefined));
    expect(Date.now() - t0).toBeLessThan(2500);
    await makePod('p2');
    await makeCk('c2', 'p2');
    await waitFor('c2 dispatched by b', async () => ((await phaseOf('c2')) === 'Dumping' ? true : undefined));
    expect(await reconciles(b.reg)).toBeGreaterThan(0);
    // b resumed c1 from its status: no second dispatch (the dispatchTime did not change)
    const c1 = (await custom.getNamespacedCustomObject({ ...CK(), name: 'c1' })) as { metadata: { labels: Record<string, string>; resourceVersion: string }; status: { dispatchTime: string; phase: string } };
    expect(c1.metadata.labels[LABEL_NODE]).toBe('node-a');
    expect(c1.status.phase).toBe('Dumping');
    expect(c1.status.dispatchTime).toBe(before.status.dispatchTime);
    expect(c1.metadata.resourceVersion).toBe(before.metadata.resourceVersion); // b re-examined it and wrote nothing
    b.ac.abort();
    await b.run.done;
  });
});

describe.skipIf(skip)('fencing against the real Lease API', () => {
  it('a leader whose Lease renewals fail stops reconciling within renewDeadline, and leads again once the API answers', async () => {
    const inst = await install('lockmig-fence');
    const proxy = await startFaultProxy(api, { token: inst.id.kubeConfig.getCurrentUser()!.token!, user: 'lockmig-controller' });
    const ac = new AbortController();
    const reg = new Registry();
    const run = await startController({
      kubeConfig: proxy.kubeConfig, logger: silentLogger(), leaderElect: true, leaseNamespace: inst.ns, leaseName: inst.lease, leaseCreate: false, identity: 'solo', registry: reg,
      leaseDurationMs: 3000, renewDeadlineMs: 1500, retryPeriodMs: 200, config: { agentAcceptTimeoutMs: 60_000 },
    }, ac.signal);
    try {
      await waitFor('leads', () => (run.elector?.isLeader ? true : undefined));
      const fail = proxy.fail({ path: `/apis/coordination.k8s.io/v1/namespaces/${inst.ns}/leases/${inst.lease}`, status: 503, times: Infinity });
      const t0 = Date.now();
      await waitFor('fenced', () => (run.elector?.isLeader === false ? true : undefined), 5000);
      expect(Date.now() - t0).toBeLessThan(3000); // before the 3 s lease could expire for anyone else
      expect(await reg.getSingleMetric('lockmig_controller_is_leader')?.get()).toMatchObject({ values: [expect.objectContaining({ value: 0 })] });
      // while fenced, new work is not touched
      await makePod('p-fenced');
      await makeCk('c-fenced', 'p-fenced');
      await new Promise((r) => setTimeout(r, 600));
      expect(await phaseOf('c-fenced')).toBeUndefined();
      fail.cancel();
      await waitFor('leads again', () => (run.elector?.isLeader ? true : undefined), 8000);
      await waitFor('c-fenced dispatched after re-election', async () => ((await phaseOf('c-fenced')) === 'Dumping' ? true : undefined));
    } finally {
      ac.abort();
      await run.done;
      await proxy.close();
    }
  });
});

describe.skipIf(skip)('a real API server restart', () => {
  it('both replicas stop leading while the server is gone, never lead at once, and one leads again afterwards from the stored Lease', async () => {
    const replicas: { name: string; ac: AbortController; run: RunningController }[] = [];
    const inst = await install('lockmig-restart');
    for (const name of ['r1', 'r2']) {
      const ac = new AbortController();
      const run = await startController({
        kubeConfig: inst.id.kubeConfig, logger: silentLogger(), leaderElect: true, leaseNamespace: inst.ns, leaseName: inst.lease, leaseCreate: false, identity: name, registry: new Registry(),
        leaseDurationMs: 3000, renewDeadlineMs: 1500, retryPeriodMs: 200, config: { agentAcceptTimeoutMs: 60_000 },
      }, ac.signal);
      replicas.push({ name, ac, run });
      if (name === 'r1') await waitFor('r1 leads', () => (run.elector?.isLeader ? true : undefined));
    }
    let overlap = 0;
    const sampler = setInterval(() => { if (replicas.every((r) => r.run.elector?.isLeader)) overlap++; }, 20);
    try {
      await api.stopApiServer();
      try {
        const t0 = Date.now();
        await waitFor('no leader', () => (replicas.every((r) => !r.run.elector?.isLeader) ? true : undefined), 6000);
        expect(Date.now() - t0).toBeLessThan(3000); // within renewDeadline (+ a retry period)
      } finally {
        await api.startApiServer();
      }
      const leader = await waitFor('a leader again', () => replicas.find((r) => r.run.elector?.isLeader), 30_000);
      const lease = await api.kubeConfig.makeApiClient(CoordinationV1Api).readNamespacedLease({ name: inst.lease, namespace: inst.ns });
      expect(lease.spec?.holderIdentity).toBe(leader.name);
      await makePod('p-restart');
      await makeCk('c-restart', 'p-restart');
      await waitFor('c-restart dispatched after the restart', async () => ((await phaseOf('c-restart')) === 'Dumping' ? true : undefined), 20_000);
      expect(overlap).toBe(0);
    } finally {
      clearInterval(sampler);
      for (const r of replicas) {
        r.ac.abort();
        await r.run.done;
      }
    }
  }, 90_000);
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

describe('lockmig controller (the CLI process)', () => {
  it('rejects bad flags with a usage error', async () => {
    const r = spawn(process.execPath, [CLI, 'controller', '--workers', 'lots'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    r.stderr.on('data', (d) => { err += d; });
    const code = await new Promise((res) => r.on('exit', res));
    expect(code).toBe(2);
    expect(err).toContain('--workers must be an integer');
  });

  it.skipIf(skip)('runs against a kubeconfig, dispatches, serves /readyz and /metrics, and exits 0 on SIGTERM', async () => {
    const [mp, hp] = [await freePort(), await freePort()];
    // with the flags the chart passes (--leader-elect, its Lease, --lease-create=false) and its ServiceAccount token
    const inst = await install('lockmig-cli');
    const child = spawn(process.execPath, [CLI, 'controller', '--kubeconfig', inst.id.kubeconfigPath, '--namespace', NS, '--leader-elect', '--lease-namespace', inst.ns, `--lease-name=${inst.lease}`, '--lease-create=false',
      '--metrics-addr', `127.0.0.1:${mp}`, '--health-addr', `127.0.0.1:${hp}`], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOCKMIG_LOG_LEVEL: 'info' },
    });
    let logs = '';
    child.stderr.on('data', (d) => { logs += d; });
    try {
      await waitFor('ready', async () => {
        try {
          return (await fetch(`http://127.0.0.1:${hp}/readyz`)).status === 200 ? true : undefined;
        } catch {
          return undefined;
        }
      });
      await makePod('p3');
      await makeCk('c3', 'p3');
      await waitFor('c3 dispatched by the CLI controller', async () => ((await phaseOf('c3')) === 'Dumping' ? true : undefined));
      const m = await (await fetch(`http://127.0.0.1:${mp}/metrics`)).text();
      expect(m).toMatch(/lockmig_controller_reconciles_total/);
      expect(m).toMatch(/lockmig_controller_process_cpu_seconds_total/);
    } finally {
      child.kill('SIGTERM');
    }
    const code = await new Promise((res) => child.on('exit', res));
    expect(code).toBe(0);
    const lines = logs.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.some((l) => l.message === 'transition' && l.controller === 'lockcheckpoint' && l.namespace === NS && l.name === 'c3')).toBe(true);
    expect(lines.some((l) => l.message === 'shutting down' && l.signal === 'SIGTERM')).toBe(true);
  });
});
