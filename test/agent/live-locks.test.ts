/**
 * The agent's live-lock endpoint (GET /locks on its health server) and per-pod lock gauges,
 * against a real kube-apiserver (pods listed as the chart's agent ServiceAccount) with virtual pods
 * whose containers are real processes in kubelet-named cgroups: pod `db-0` holds SQLite's locks
 * and an OFD lock on a hostPath volume, pod `reader-0` is blocked in F_SETLKW on the OFD-locked
 * file. Checked over real HTTP and against /proc/locks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { CoreV1Api } from '@kubernetes/client-node';
import { LiveLockService, type NodeLocks } from '../../src/agent/live-locks.js';
import { startServer, type RunningServer } from '../../src/kube/server.js';
import { chartIdentity, type ChartIdentity } from '../support/envtest/index.js';
import { missing } from '../helpers/env.js';
import { WAITER } from './support/waiter.js';
import { HOLDER, KubeletCgroups, connectCluster, containerID, createRunningPod, setupNamespaceAndNode, suffix, type Cluster } from './support/virtual-pods.js';

const skip = missing({ root: true, tools: ['python3'], k8s: true }, 'agent /locks endpoint against a real API server');


describe.skipIf(skip)('agent /locks and lock metrics', () => {
  let cluster: Cluster;
  let env: Awaited<ReturnType<typeof setupNamespaceAndNode>>;
  let cgroups: KubeletCgroups;
  let identity: ChartIdentity;
  let server: RunningServer;
  let registry: Registry;
  let dataDir: string;
  let holderPid: number;
  let waiterPid: number;
  let waiterFd: number;
  const ids = { db: containerID(), reader: containerID() };

  beforeAll(async () => {
    cluster = await connectCluster();
    env = await setupNamespaceAndNode(cluster, 'locks');
    cgroups = new KubeletCgroups('locks');
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-locks-data-'));
    const volume = { name: 'shared', hostPath: { path: dataDir, type: 'Directory' } };
    const db = await createRunningPod(cluster, {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'db-0', namespace: env.namespace },
      spec: { nodeName: env.node, volumes: [volume], containers: [{ name: 'db', image: 'example/db', volumeMounts: [{ name: 'shared', mountPath: dataDir }] }] },
    }, { db: ids.db });
    const reader = await createRunningPod(cluster, {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'reader-0', namespace: env.namespace },
      spec: { nodeName: env.node, volumes: [volume], containers: [{ name: 'reader', image: 'example/reader', volumeMounts: [{ name: 'shared', mountPath: dataDir }] }] },
    }, { reader: ids.reader });
    const h = await cgroups.start(cgroups.container({ podUID: db.metadata!.uid!, containerID: ids.db }), ['python3', HOLDER, '--ofd', `${dataDir}/ofd.lock`, '--sqlite', `${dataDir}/app.db`]);
    holderPid = h.pid;
    const w = await cgroups.start(cgroups.container({ podUID: reader.metadata!.uid!, containerID: ids.reader }), ['python3', '-c', WAITER, `${dataDir}/ofd.lock`]);
    waiterPid = w.pid;
    waiterFd = parseInt(w.line, 10);
    for (let i = 0; i < 200 && !fs.readFileSync('/proc/locks', 'utf8').includes(`-> POSIX  ADVISORY  WRITE ${waiterPid} `); i++) await new Promise((r) => setTimeout(r, 25));

    identity = await chartIdentity(cluster, 'agent', env.namespace, { release: `lockmig-e2e-${suffix()}` });
    const core = identity.kubeConfig.makeApiClient(CoreV1Api);
    registry = new Registry();
    const live = new LiveLockService({
      node: env.node, registry,
      listPods: async () => (await core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${env.node}` })).items,
    });
    server = await startServer({ addr: '127.0.0.1:0', health: { process: () => true }, registry, routes: { '/locks': (u) => live.handle(u) } });
  });

  afterAll(async () => {
    await server?.close();
    await cgroups?.cleanup();
    await identity?.cleanup();
    await env?.cleanup();
    await cluster?.close();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  const get = async (q: string) => {
    const r = await fetch(`http://127.0.0.1:${server.port}/locks${q}`);
    return { status: r.status, body: (await r.json()) as NodeLocks & { error?: string } };
  };

  it('names pod, container, pids, fds, paths and the volume of every held lock', async () => {
    const { status, body } = await get(`?namespace=${env.namespace}`);
    expect(status).toBe(200);
    expect(body.node).toBe(env.node);
    const db = body.locks.filter((l) => l.pod === 'db-0');
    expect(db.every((l) => l.namespace === env.namespace && l.container === 'db' && l.hostPid === holderPid)).toBe(true);
    // not in a pid namespace of its own here: the pid inside is the host pid
    expect(db[0]!.pid).toBe(holderPid);
    const ofd = db.find((l) => l.kind === 'OFD')!;
    expect([ofd.type, ofd.start, ofd.end, ofd.path]).toEqual(['WRITE', '0', '99', `${dataDir}/ofd.lock`]);
    expect(ofd.volume).toEqual({ name: 'shared', type: 'hostPath', mountPath: dataDir, hostPath: dataDir });
    // SQLite in EXCLUSIVE mode: POSIX locks on app.db (pending/reserved/shared bytes at 1 GiB)
    const sq = db.filter((l) => l.kind === 'POSIX' && l.path === `${dataDir}/app.db`);
    expect(sq.length).toBeGreaterThanOrEqual(1);
    expect(sq.some((l) => l.start === '1073741824')).toBe(true);
    // the same locks, owners and files as /proc/locks
    const procLocks = fs.readFileSync('/proc/locks', 'utf8');
    for (const l of db) expect(procLocks).toMatch(new RegExp(`^\\d+: ${l.kind === 'OFD' ? 'OFDLCK' : l.kind}\\s+ADVISORY\\s+${l.type}\\s+${l.kind === 'OFD' ? -1 : holderPid} ${l.file} ${l.start} ${l.end}$`, 'm'));
  });

  it('pairs the blocked reader with the holder pod it waits for', async () => {
    const { body } = await get(`?namespace=${env.namespace}&pod=reader-0`);
    expect(body.locks).toEqual([]);
    expect(body.waiters).toHaveLength(1);
    const w = body.waiters[0]!;
    expect([w.pod, w.container, w.hostPid, w.fd, w.kind, w.type, w.path, w.pathFrom]).toEqual(['reader-0', 'reader', waiterPid, waiterFd, 'POSIX', 'WRITE', `${dataDir}/ofd.lock`, 'fd']);
    expect(w.volume?.name).toBe('shared');
    expect([w.holder.pod, w.holder.container, w.holder.hostPid, w.holder.kind, w.holder.path]).toEqual(['db-0', 'db', holderPid, 'OFD', `${dataDir}/ofd.lock`]);
    // asking for the holder's pod shows the waiter too (it waits for that pod)
    const h = await get(`?namespace=${env.namespace}&pod=db-0`);
    expect(h.body.waiters.map((x) => x.pod)).toEqual(['reader-0']);
    // another namespace: nothing
    const other = await get('?namespace=kube-system');
    expect(other.body.locks.concat(other.body.waiters as never[])).toEqual([]);
  });

  it('rejects bad queries clearly', async () => {
    expect((await get('?pod=db-0')).status).toBe(400);
    const r = await get('?nmespace=x');
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/nmespace/);
  });

  it('exports per-pod lock gauges and waiter counts with the age of the oldest waiter', async () => {
    const first = await registry.metrics();
    expect(first).toMatch(new RegExp(`lockmig_agent_pod_locks\\{namespace="${env.namespace}",pod="db-0",container="db",kind="OFD",type="WRITE"\\} 1`));
    expect(first).toMatch(new RegExp(`lockmig_agent_pod_locks\\{namespace="${env.namespace}",pod="db-0",container="db",kind="POSIX",type="(READ|WRITE)"\\} [1-9]`));
    expect(first).toMatch(new RegExp(`lockmig_agent_pod_lock_waiters\\{namespace="${env.namespace}",pod="reader-0",container="reader"\\} 1`));
    await new Promise((r) => setTimeout(r, 1300));
    const text = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
    const m = new RegExp(`lockmig_agent_pod_lock_wait_seconds\\{namespace="${env.namespace}",pod="reader-0",container="reader"\\} ([0-9.]+)`).exec(text);
    expect(m).not.toBeNull();
    if (process.env.LOCKMIG_PLUGIN_CAPTURE) fs.appendFileSync(process.env.LOCKMIG_PLUGIN_CAPTURE, `$ curl -s http://<agent>:8080/metrics | grep lockmig_agent_pod_\n${text.split('\n').filter((l) => l.startsWith('lockmig_agent_pod_') || l.startsWith('# HELP lockmig_agent_pod_')).join('\n')}\n\n`);
    // first seen at an earlier snapshot: the age grows between scrapes
    expect(Number(m![1])).toBeGreaterThanOrEqual(1);
  });
});
