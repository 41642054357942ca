/**
 * Two controller replicas with --leader-elect against the in-memory API server (a real
 * coordination.k8s.io/v1 Lease, real client-node): only the leader reconciles; when it shuts
 * down it releases the Lease and the other replica takes over and resumes from status. Plus the
 * CLI: `lockmig controller` as a process, with SIGTERM handling.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { CoordinationV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { startFakeApiServer, type FakeApiServer } from '../support/apiserver/index.js';
import { startController, type RunningController } from '../../src/controller/main.js';
import { GROUP, LABEL_NODE, PLURAL, VERSION } from '../../src/api/lockcheckpoint.js';
import { silentLogger } from '../../src/log/logger.js';
import { CLI, REPO_ROOT } from '../helpers/env.js';

const NS = 'le';
const CK = { group: GROUP, version: VERSION, plural: PLURAL, namespace: NS };
let srv: FakeApiServer;
let custom: CustomObjectsApi;

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
  const p = await srv.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS }, spec: { nodeName: 'node-a', containers: [{ name: 'c', image: 'x' }] } });
  await srv.updateStatus({ ...p, status: { phase: 'Running' } });
}

async function makeCk(name: string, pod: string) {
  await custom.createNamespacedCustomObject({ ...CK, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'LockCheckpoint', metadata: { name }, spec: { sourcePodName: pod } } });
}

const phaseOf = async (name: string) => ((await custom.getNamespacedCustomObject({ ...CK, name })) as { status?: { phase?: string } }).status?.phase;

beforeAll(async () => {
  srv = await startFakeApiServer({ crds: [path.join(REPO_ROOT, 'crds/lockmig.dev_lockcheckpoints.yaml')], bookmarkIntervalMs: 200 });
  custom = srv.kubeConfig.makeApiClient(CustomObjectsApi);
  await srv.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
});

afterAll(async () => {
  await srv?.close();
});

describe('leader election with two controller replicas', () => {
  it('only the leader reconciles; on shutdown it releases the Lease and the other takes over', async () => {
    const replicas: { ac: AbortController; reg: Registry; run: RunningController }[] = [];
    for (const id of ['replica-a', 'replica-b']) {
      const ac = new AbortController();
      const reg = new Registry();
      const run = await startController({
        kubeConfig: srv.kubeConfig, logger: silentLogger(), leaderElect: true, leaseNamespace: NS, identity: id, registry: reg,
        leaseDurationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 300, config: { agentAcceptTimeoutMs: 60_000 },
      }, ac.signal);
      replicas.push({ ac, reg, run });
      if (id === 'replica-a') await waitFor('a leads', () => (run.elector?.isLeader ? true : undefined));
    }
    const [a, b] = replicas as [typeof replicas[0], typeof replicas[0]];
    const lease = await srv.kubeConfig.makeApiClient(CoordinationV1Api).readNamespacedLease({ name: 'lockmig-controller', namespace: NS });
    expect(lease.spec?.holderIdentity).toBe('replica-a');
    expect(String(lease.spec?.renewTime)).toMatch(/\.\d{6}Z$/); // MicroTime on the wire

    await makePod('p1');
    await makeCk('c1', 'p1');
    await waitFor('c1 dispatched', async () => ((await phaseOf('c1')) === 'Dumping' ? true : undefined));
    await new Promise((r) => setTimeout(r, 500));
    expect(b.run.elector?.isLeader).toBe(false);
    expect(await reconciles(a.reg)).toBeGreaterThan(0);
    expect(await reconciles(b.reg)).toBe(0);

    const before = (await custom.getNamespacedCustomObject({ ...CK, name: 'c1' })) as { metadata: { resourceVersion: string }; status: { dispatchTime: string } };
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
    const c1 = (await custom.getNamespacedCustomObject({ ...CK, name: 'c1' })) as { metadata: { labels: Record<string, string>; resourceVersion: string }; status: { dispatchTime: string; phase: string } };
    expect(c1.metadata.labels[LABEL_NODE]).toBe('node-a');
    expect(c1.status.phase).toBe('Dumping');
    expect(c1.status.dispatchTime).toBe(before.status.dispatchTime);
    expect(c1.metadata.resourceVersion).toBe(before.metadata.resourceVersion); // b re-examined it and wrote nothing
    b.ac.abort();
    await b.run.done;
  });
});

describe('fencing against the real Lease API', () => {
  it('a leader whose Lease renewals fail stops reconciling within renewDeadline, and leads again once the API answers', async () => {
    const ac = new AbortController();
    const reg = new Registry();
    const run = await startController({
      kubeConfig: srv.kubeConfig, logger: silentLogger(), leaderElect: true, leaseNamespace: NS, leaseName: 'fence', identity: 'solo', registry: reg,
      leaseDurationMs: 3000, renewDeadlineMs: 1500, retryPeriodMs: 200, config: { agentAcceptTimeoutMs: 60_000 },
    }, ac.signal);
    try {
      await waitFor('leads', () => (run.elector?.isLeader ? true : undefined));
      const fail = srv.injectFailure({ path: '/apis/coordination.k8s.io/v1/namespaces/le/leases/fence', code: 503, times: 10_000 });
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
    }
  });
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

  it('runs against a kubeconfig, dispatches, serves /readyz and /metrics, and exits 0 on SIGTERM', async () => {
    const [mp, hp] = [await freePort(), await freePort()];
    const child = spawn(process.execPath, [CLI, 'controller', '--kubeconfig', srv.kubeconfigPath, '--namespace', NS, '--metrics-addr', `127.0.0.1:${mp}`, '--health-addr', `127.0.0.1:${hp}`], {
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
