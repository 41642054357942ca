/**
 * End to end: a LockCheckpoint moves the locks of a running "pod" into a new pod.
 *
 * Runs against its own real kube-apiserver by default (test/support/envtest), and unchanged
 * against any cluster when LOCKMIG_E2E_KUBECONFIG names a kubeconfig (docs/e2e.md). The pods are bound to a Node object
 * no kubelet serves; their containers are local processes in cgroups named the way the kubelet
 * and containerd name them (systemd driver, under the real cgroup2 mount), holding real locks
 * (python3 fcntl/flock/OFD and an SQLite database). The controller and the agent are the real
 * `lockmig controller` / `lockmig agent` processes (NODE_NAME set); the webhook is the real HTTPS
 * server, called with an AdmissionReview as the API server would. Each component acts as its
 * chart ServiceAccount (the chart's RBAC, a token from the TokenRequest API). The restore pod's wrapped
 * command runs locally (the webhook's in-pod paths /lockmig/{shim,images,vault} mapped to the
 * host directories they mount) and must come up holding the locks: checked in /proc/locks and
 * with contenders that are not lockmig code (flock -n, python3 fcntl, sqlite3).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import https from 'node:https';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import { CLI, missing } from '../helpers/env.js';
import { silentLogger } from '../../src/log/logger.js';
import { kubeCheckpointStore } from '../../src/webhook/checkpoints.js';
import { DEFAULT_WEBHOOK_CONFIG } from '../../src/webhook/mutate.js';
import { startWebhookServer, type WebhookServer } from '../../src/webhook/server.js';
import { applyJsonPatch } from '../webhook/jsonpatch.js';
import {
  connectCluster, containerID, createCheckpoint, createRunningPod, deletePodNow, needsEnvtest, setupNamespaceAndNode, suffix, waitForCheckpoint, type Cluster,
} from './support/cluster.js';
import { chartIdentity, type ChartIdentity } from '../support/envtest/index.js';
import { HOLDER, KubeletCgroups, fcntlFree, flockFree, inode, procLocksFor, sqliteState, stop } from './support/workload.js';

const skip = missing({ root: true, tools: ['python3', 'sqlite3', 'flock', 'openssl'], k8s: needsEnvtest() }, 'lockmig end to end');

interface Files { posix: string; flock: string; ofd: string; db: string }

const T0 = Date.now();
/** LOCKMIG_E2E_VERBOSE=1 prints each step with its time (where an e2e run spends its time). */
function step(what: string): void {
  if (process.env.LOCKMIG_E2E_VERBOSE) process.stderr.write(`[e2e +${((Date.now() - T0) / 1000).toFixed(2)}s] ${what}\n`);
}

function startDaemon(args: string[], env: NodeJS.ProcessEnv, name: string): { child: ChildProcess; log: () => string } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, LOCKMIG_LOG_LEVEL: 'debug', ...env } });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-200_000); });
  child.once('exit', (code, sig) => { log += `\n[${name} exited: ${code ?? sig}]\n`; });
  return { child, log: () => log };
}

async function waitFor<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs: number, diag: () => string = () => ''): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${diag()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function postReview(url: string, ca: Buffer, body: unknown): Promise<any> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${url}/mutate-pods`, { method: 'POST', ca, headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => { try { resolve(JSON.parse(Buffer.concat(chunks).toString())); } catch (e) { reject(e); } });
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

describe.skipIf(skip)('lockmig end to end', () => {
  let cluster: Cluster;
  let env: Awaited<ReturnType<typeof setupNamespaceAndNode>>;
  let cgroups: KubeletCgroups;
  let work: string;
  let storageRoot: string;
  let shimDir: string;
  let vaultDir: string;
  let controller: ReturnType<typeof startDaemon>;
  let agent: ReturnType<typeof startDaemon>;
  let webhook: WebhookServer;
  let ca: Buffer;
  const identities: ChartIdentity[] = [];
  const diag = () => `--- agent log (tail) ---\n${agent?.log().slice(-6000)}\n--- controller log (tail) ---\n${controller?.log().slice(-4000)}`;

  beforeAll(async () => {
    cluster = await connectCluster();
    env = await setupNamespaceAndNode(cluster, 'e2e');
    cgroups = new KubeletCgroups('e2e');
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-e2e-'));
    storageRoot = path.join(work, 'checkpoints');
    shimDir = path.join(work, 'shim');
    vaultDir = path.join(work, 'vault');
    fs.mkdirSync(vaultDir);

    // every component acts as its chart ServiceAccount (one release of its own, for real clusters)
    const release = `lockmig-e2e-${suffix()}`;
    const [ctlId, agentId, hookId] = [
      await chartIdentity(cluster, 'controller', env.namespace, { release }),
      await chartIdentity(cluster, 'agent', env.namespace, { release }),
      await chartIdentity(cluster, 'webhook', env.namespace, { release }),
    ];
    identities.push(ctlId, agentId, hookId);
    controller = startDaemon(['controller', '--kubeconfig', ctlId.kubeconfigPath, '--namespace', env.namespace, '--metrics-addr', '0', '--health-addr', '0'], {}, 'controller');
    // The agent installs the shim bundle into --shim-dir at start (built here: no prebuilt one).
    agent = startDaemon(['agent', '--kubeconfig', agentId.kubeconfigPath, '--storage-root', storageRoot, '--shim-dir', shimDir,
      '--vault-socket', path.join(vaultDir, 'vault.sock'), '--health-addr', '127.0.0.1:0', '--metrics-addr', '0'],
    { NODE_NAME: env.node, LOCKMIG_SHIM_BUNDLE: path.join(work, 'no-prebuilt-bundle') }, 'agent');

    const certDir = path.join(work, 'tls');
    fs.mkdirSync(certDir);
    const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=lockmig-webhook',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', path.join(certDir, 'tls.key'), '-out', path.join(certDir, 'tls.crt')], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    ca = fs.readFileSync(path.join(certDir, 'tls.crt'));
    webhook = await startWebhookServer({
      addr: '127.0.0.1:0', tls: { certFile: path.join(certDir, 'tls.crt'), keyFile: path.join(certDir, 'tls.key') },
      store: kubeCheckpointStore(hookId.kubeConfig),
      config: { ...DEFAULT_WEBHOOK_CONFIG, shimDir, vaultSocketDir: vaultDir, storageRoot },
      logger: silentLogger(),
    });
    // wait for the agent: vault socket bound and shim installed happen before it watches
    step('daemons started');
    await waitFor('the agent to install the shim and bind the vault', () => fs.existsSync(path.join(shimDir, 'current', 'bundle.json')) && fs.existsSync(path.join(vaultDir, 'vault.sock')), 120_000, diag);
    step('agent ready');
  }, 180_000);

  afterAll(async () => {
    await webhook?.close();
    // Delete the checkpoints while the controller and agent still run the finalizer protocol
    // (on a real cluster a leftover finalizer would keep the namespace Terminating).
    if (cluster && env) {
      const q = { group: 'lockmig.dev', version: 'v1alpha1', namespace: env.namespace, plural: 'lockcheckpoints' };
      const names = async () => ((await cluster.custom.listNamespacedCustomObject(q).catch(() => ({ items: [] }))) as { items: Array<{ metadata: { name: string } }> }).items.map((i) => i.metadata.name);
      for (const name of await names()) await cluster.custom.deleteNamespacedCustomObject({ ...q, name }).catch(() => undefined);
      const deadline = Date.now() + 20_000;
      while ((await names()).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      for (const name of await names()) {
        await cluster.custom.patchNamespacedCustomObject({ ...q, name, body: { metadata: { finalizers: null } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)).catch(() => undefined);
      }
    }
    for (const d of [agent, controller]) if (d) await stop(d.child);
    for (const i of identities) await i.cleanup();
    await cgroups?.cleanup();
    await env?.cleanup();
    await cluster?.close();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  /** A source pod whose container `db` is a holder process with the given locks. */
  async function sourcePod(name: string, files: Files, locks: readonly string[]): Promise<{ uid: string; holder: Awaited<ReturnType<KubeletCgroups['start']>> }> {
    const dataDir = path.dirname(files.posix);
    const ids = { db: containerID() };
    const pod = await createRunningPod(cluster, {
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name, namespace: env.namespace, labels: { app: name } },
      spec: {
        nodeName: env.node,
        containers: [{ name: 'db', image: 'example/sqlite-app', command: ['python3', HOLDER, ...locks], volumeMounts: [{ name: 'data', mountPath: dataDir }] }],
        volumes: [{ name: 'data', hostPath: { path: dataDir, type: 'Directory' } }],
        tolerations: [{ key: 'lockmig.dev/e2e', operator: 'Exists' }],
      },
    }, ids);
    const uid = pod.metadata!.uid!;
    const holder = await cgroups.start(cgroups.container({ podUID: uid, containerID: ids.db }), ['python3', HOLDER, ...locks]);
    return { uid, holder };
  }

  /** Admit a restore pod through the webhook (HTTPS AdmissionReview), create it, return the created pod. */
  async function admitRestorePod(name: string, checkpoint: string, dataDir: string): Promise<{ pod: V1Pod; response: any }> {
    const pod: V1Pod = {
      apiVersion: 'v1', kind: 'Pod',
      // (no lockmig.dev/restore label: on a real cluster with lockmig installed, its own webhook must not act on this pod)
      metadata: { name, namespace: env.namespace, annotations: { 'lockmig.dev/restore-from': checkpoint } },
      spec: {
        containers: [{ name: 'db', image: 'example/sqlite-app', command: ['python3', HOLDER, '--adopt'], volumeMounts: [{ name: 'data', mountPath: dataDir }] }],
        volumes: [{ name: 'data', hostPath: { path: dataDir, type: 'Directory' } }],
        tolerations: [{ key: 'lockmig.dev/e2e', operator: 'Exists' }],
      },
    };
    const review = await postReview(webhook.url, ca, {
      apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview',
      request: { uid: `e2e-${name}`, kind: { group: '', version: 'v1', kind: 'Pod' }, resource: { group: '', version: 'v1', resource: 'pods' }, namespace: env.namespace, operation: 'CREATE', object: pod },
    });
    const response = review.response;
    if (!response.allowed) return { pod, response };
    const mutated = applyJsonPatch(pod, JSON.parse(Buffer.from(response.patch, 'base64').toString()));
    // the scheduler's part: bind it to the node its affinity names
    const terms = mutated.spec!.affinity!.nodeAffinity!.requiredDuringSchedulingIgnoredDuringExecution!.nodeSelectorTerms;
    const node = terms[0]!.matchFields!.find((f) => f.key === 'metadata.name')!.values![0]!;
    const created = await cluster.core.createNamespacedPod({ namespace: env.namespace, body: { ...mutated, spec: { ...mutated.spec!, nodeName: node } } });
    return { pod: created, response };
  }

  /** Run a container's (wrapped) command the way the node would: in its kubelet cgroup, with the volumes' in-pod paths mapped to their host directories. */
  async function runContainer(pod: V1Pod, container: string) {
    const c = pod.spec!.containers.find((x) => x.name === container)!;
    const hostOf: Record<string, string> = {};
    for (const vm of c.volumeMounts ?? []) {
      const vol = pod.spec!.volumes!.find((v) => v.name === vm.name)!;
      if (vol.hostPath) hostOf[vm.mountPath] = vol.hostPath.path;
    }
    const map = (a: string) => {
      for (const [mnt, host] of Object.entries(hostOf)) if (a === mnt || a.startsWith(`${mnt}/`)) return host + a.slice(mnt.length);
      return a;
    };
    const argv = [...(c.command ?? []), ...(c.args ?? [])].map(map);
    const envVars = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? '']));
    const dir = cgroups.container({ podUID: pod.metadata!.uid!, containerID: containerID() });
    return { argv, started: await cgroups.start(dir, argv, { ...process.env, ...envVars }, 60_000) };
  }

  function mkFiles(tag: string): Files {
    const d = path.join(work, `data-${tag}`);
    fs.mkdirSync(d);
    return { posix: path.join(d, 'posix.lock'), flock: path.join(d, 'flock.lock'), ofd: path.join(d, 'ofd.lock'), db: path.join(d, 'app.db') };
  }

  it('re-take: Dumped with the right counts, the restore pod comes up holding every lock', async () => {
    const f = mkFiles('retake');
    step('retake: start');
    const src = await sourcePod('db-0', f, ['--posix', f.posix, '--flock', f.flock, '--ofd', f.ofd, '--sqlite', f.db]);
    expect(sqliteState(f.db)).toBe('locked');

    await createCheckpoint(cluster, {
      apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint',
      metadata: { name: 'move-db', namespace: env.namespace },
      spec: { sourcePodName: 'db-0', restore: { mode: 'Retake', timeoutSeconds: 20 } },
    });
    step('retake: checkpoint created');
    const cp = await waitForCheckpoint(cluster, env.namespace, 'move-db', (c) => c?.status?.phase === 'Dumped' || c?.status?.phase === 'Failed', 'phase Dumped', 60_000)
      .catch((e: Error) => { throw new Error(`${e.message}\n${diag()}`); });
    expect(cp!.status!.phase, cp!.status!.message).toBe('Dumped');
    expect(cp!.status!.nodeName).toBe(env.node);
    expect(cp!.status!.sourcePodUID).toBe(src.uid);
    expect(cp!.status!.locks).toEqual({ posix: 2, flock: 1, ofd: 1, lease: 0, total: 4 });
    expect(cp!.status!.files).toBe(4);
    expect(cp!.metadata.labels?.['lockmig.dev/node']).toBe(env.node);

    step('retake: Dumped');
    // The source pod goes away (its locks with it)…
    await stop(src.holder.child);
    await deletePodNow(cluster, env.namespace, 'db-0');
    expect(flockFree(f.flock)).toBe(true);
    expect(sqliteState(f.db)).toBe('free');

    // …and the replacement is admitted through the webhook, wrapped with the restore shim.
    step('retake: source gone');
    const { pod, response } = await admitRestorePod('db-1', 'move-db', path.dirname(f.db));
    step('retake: restore pod admitted and created');
    expect(response.allowed, JSON.stringify(response.status)).toBe(true);
    const cmd = pod.spec!.containers[0]!.command!;
    expect(cmd).toContain('restore');
    expect(cmd.slice(cmd.indexOf('--'))).toEqual(['--', 'python3', HOLDER, '--adopt']);
    const claimed = await waitForCheckpoint(cluster, env.namespace, 'move-db', (c) => c?.status?.restoredPod?.name === 'db-1', 'restoredPod');
    expect(claimed!.status!.restoredPod!.nodeName).toBe(env.node);

    // A second restore pod is refused.
    const second = await admitRestorePod('db-2', 'move-db', path.dirname(f.db));
    expect(second.response.allowed).toBe(false);
    expect(second.response.status.message).toContain('already restored by pod "db-1"');

    // Run it: the application starts already holding the locks.
    step('retake: running the wrapped command');
    const { started } = await runContainer(pod, 'db');
    step('retake: application up');
    const app = JSON.parse(started.line) as { pid: number; inherited: string };
    expect(app.pid).toBe(started.pid); // the shim exec'd the application in place
    expect(app.inherited).not.toBe('');
    const byKind = (p: string) => procLocksFor(inode(p));
    expect(byKind(f.posix)).toEqual([expect.objectContaining({ kind: 'POSIX', type: 'WRITE', pid: app.pid })]);
    expect(byKind(f.flock)).toEqual([expect.objectContaining({ kind: 'FLOCK', type: 'WRITE', pid: app.pid })]);
    expect(byKind(f.ofd)).toEqual([expect.objectContaining({ kind: 'OFDLCK', type: 'WRITE', start: '0', end: '99' })]);
    expect(byKind(f.db)).toEqual([expect.objectContaining({ kind: 'POSIX', type: 'WRITE', pid: app.pid, start: '1073741824' })]);
    // The OFD lock is on one of the application's own fds.
    const fds = fs.readdirSync(`/proc/${app.pid}/fdinfo`).map((n) => fs.readFileSync(`/proc/${app.pid}/fdinfo/${n}`, 'utf8'));
    expect(fds.some((t) => new RegExp(`ino:\\s+${inode(f.ofd)}\\n`).test(t) && /lock:.*OFDLCK/.test(t))).toBe(true);
    // Contenders that are not lockmig code.
    expect(flockFree(f.flock)).toBe(false);
    expect(fcntlFree(f.posix, 'posix')).toBe(false);
    expect(fcntlFree(f.ofd, 'ofd')).toBe(false);
    expect(sqliteState(f.db)).toBe('locked');

    const done = await waitForCheckpoint(cluster, env.namespace, 'move-db', (c) => c?.status?.phase === 'Restored', 'phase Restored');
    step('retake: phase Restored');
    expect(done!.status!.restoredPod!.name).toBe('db-1');
    // what `kubectl describe lckpt move-db` shows: Events of the controller and of the agent
    // (Events are written asynchronously: poll until the last one is there)
    const reasonsBy = async () => {
      const events = (await cluster.core.listNamespacedEvent({ namespace: env.namespace })).items.filter((e) => e.involvedObject.name === 'move-db');
      const by = (component: string) => events.filter((e) => e.source?.component === component).map((e) => e.reason);
      return { agent: by('lockmig-agent'), controller: by('lockmig-controller') };
    };
    const reasons = await waitFor('the Events of the move', async () => {
      const r = await reasonsBy();
      return r.agent.includes('Dumped') && ['Dispatched', 'Dumped', 'Restored'].every((x) => r.controller.includes(x)) ? r : undefined;
    }, 15_000).catch(async (e: Error) => { throw new Error(`${e.message}; events so far: ${JSON.stringify(await reasonsBy())}`); });
    expect(reasons.agent).toContain('Dumped');
    expect(reasons.controller).toEqual(expect.arrayContaining(['Dispatched', 'Dumped', 'Restored']));

    // and the contenders do win once the application is gone (they are not always failing)
    await stop(started.child);
    expect(flockFree(f.flock)).toBe(true);
    expect(fcntlFree(f.ofd, 'ofd')).toBe(true);
    expect(sqliteState(f.db)).toBe('free');
  }, 120_000);

  it('handover: OFD and flock locks never become free between the source and the restore pod', async () => {
    const f = mkFiles('handover');
    const src = await sourcePod('kv-0', f, ['--posix', f.posix, '--flock', f.flock, '--ofd', f.ofd]);
    await createCheckpoint(cluster, {
      apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint',
      metadata: { name: 'move-kv', namespace: env.namespace },
      spec: { sourcePodName: 'kv-0', restore: { mode: 'Handover', timeoutSeconds: 20, holdSeconds: 120 } },
    });
    step('handover: checkpoint created');
    const cp = await waitForCheckpoint(cluster, env.namespace, 'move-kv', (c) => c?.status?.phase === 'HandoverReady' || c?.status?.phase === 'Failed' || c?.status?.phase === 'Dumped', 'phase HandoverReady', 60_000)
      .catch((e: Error) => { throw new Error(`${e.message}\n${diag()}`); });
    expect(cp!.status!.phase, `${cp!.status!.message}\n${JSON.stringify(cp!.status!.agent)}`).toBe('HandoverReady');
    expect(cp!.status!.locks).toMatchObject({ posix: 1, flock: 1, ofd: 1, total: 3 });
    expect(cp!.status!.agent!.handoverSocket).toBe(path.join(vaultDir, 'vault.sock'));

    const { pod, response } = await admitRestorePod('kv-1', 'move-kv', path.dirname(f.ofd));
    expect(response.allowed, JSON.stringify(response.status)).toBe(true);
    const cmd = pod.spec!.containers[0]!.command!;
    expect(cmd.slice(cmd.indexOf('--handover'), cmd.indexOf('--handover') + 4)).toEqual(['--handover', '/lockmig/vault/vault.sock', '--checkpoint', `${env.namespace}/move-kv.db`]);

    // The source dies. The vault holds the descriptions: OFD and flock stay held throughout.
    await stop(src.holder.child);
    await deletePodNow(cluster, env.namespace, 'kv-0');
    expect(flockFree(f.flock)).toBe(false);
    expect(fcntlFree(f.ofd, 'ofd')).toBe(false);
    // POSIX locks belong to the process: this is the window lockmig reports, not hides.
    expect(fcntlFree(f.posix, 'posix')).toBe(true);

    // Wait until the agent knows the restore pod's UID (it refuses everyone before).
    step('handover: source gone, locks still held');
    await waitFor('the agent to identify the restore pod', () => /handover target identified/.test(agent.log()) || undefined, 20_000, diag);
    step('handover: running the wrapped command');
    const { started } = await runContainer(pod, 'db');
    step('handover: application up');
    const app = JSON.parse(started.line) as { pid: number; inherited: string };
    expect(procLocksFor(inode(f.posix))).toEqual([expect.objectContaining({ kind: 'POSIX', pid: app.pid })]);
    expect(procLocksFor(inode(f.flock))).toEqual([expect.objectContaining({ kind: 'FLOCK' })]);
    expect(procLocksFor(inode(f.ofd))).toEqual([expect.objectContaining({ kind: 'OFDLCK', type: 'WRITE' })]);
    expect(flockFree(f.flock)).toBe(false);
    expect(fcntlFree(f.ofd, 'ofd')).toBe(false);
    expect(fcntlFree(f.posix, 'posix')).toBe(false);
    // The vault handed the descriptions over and closed its copies: the restored app is the only holder.
    await waitFor('the vault to close its copies', () => /delivered|confirmed/i.test(agent.log()) || undefined, 10_000, diag);
    await stop(started.child);
    expect(flockFree(f.flock)).toBe(true);
    expect(fcntlFree(f.ofd, 'ofd')).toBe(true);
  }, 120_000);

  it('deleting a checkpoint deletes its images on the node, then the object', async () => {
    const dir = path.join(storageRoot, env.namespace, 'move-db');
    expect(fs.existsSync(path.join(dir, 'db', 'manifest.json'))).toBe(true);
    await cluster.custom.deleteNamespacedCustomObject({ group: 'lockmig.dev', version: 'v1alpha1', namespace: env.namespace, plural: 'lockcheckpoints', name: 'move-db' });
    await waitForCheckpoint(cluster, env.namespace, 'move-db', (c) => c === undefined, 'the checkpoint to be gone', 30_000)
      .catch((e: Error) => { throw new Error(`${e.message}\n${diag()}`); });
    expect(fs.existsSync(dir)).toBe(false);
  }, 60_000);
});
