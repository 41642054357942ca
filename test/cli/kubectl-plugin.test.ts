/**
 * kubectl-lockmig against a real kube-apiserver: what it shows, and to whom.
 *
 * The agent side is real (LiveLockService over HTTP, listing pods as the chart's agent
 * ServiceAccount) with virtual pods whose containers are real processes in kubelet-named cgroups:
 * `db-0` in namespace A holds SQLite's locks, an OFD lock and a flock; `reader-0` in namespace B
 * is blocked in F_SETLKW on the OFD-locked file. The only thing not real is the hop from the API
 * server to the agent pod (its pod proxy needs a pod IP, which no kubelet gives here): the
 * plugin's transport calls the agent's /locks over HTTP directly; everything else (listing the
 * agent pods, SelfSubjectAccessReviews, LockCheckpoints, ConfigMaps) goes to the API server with
 * the caller's credentials — an admin, and `alice`, bound to a Role in namespace A only plus the
 * chart's ClusterRole lockmig-lock-viewer in the agents' namespace.
 * The real-node version (pod proxy included) is test/node/50-plugin.node.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AppsV1Api, CoreV1Api, CustomObjectsApi, RbacAuthorizationV1Api, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { LiveLockService, type NodeLocks } from '../../src/agent/live-locks.js';
import { planConfigMaps, readImageFiles } from '../../src/agent/storage.js';
import { startServer, type RunningServer } from '../../src/kube/server.js';
import { dumpProcesses } from '../../src/engine/dump.js';
import { writeCheckpoint } from '../../src/image/index.js';
import { GROUP, PLURAL, VERSION } from '../../src/api/index.js';
import { CliError } from '../../src/cli/args.js';
import { runPlugin } from '../../src/cli/plugin/main.js';
import type { AgentTransport } from '../../src/cli/plugin/kube.js';
import { chartIdentity, createTestNamespace, helmTemplate, kubectl, ok, serviceAccountKubeconfig, type ChartIdentity, type TestNamespace } from '../support/envtest/index.js';
import { REPO_ROOT, missing, runCli } from '../helpers/env.js';
import { spawnSync } from 'node:child_process';
import { HOLDER, KubeletCgroups, connectCluster, containerID, createRunningPod, setupNamespaceAndNode, suffix, type Cluster } from '../agent/support/virtual-pods.js';
import { WAITER } from '../agent/support/waiter.js';

const skip = missing({ root: true, tools: ['python3', 'sqlite3'], k8s: true }, 'kubectl-lockmig against a real API server');

describe.skipIf(skip)('kubectl lockmig', () => {
  let cluster: Cluster;
  let env: Awaited<ReturnType<typeof setupNamespaceAndNode>>;
  let nsB: TestNamespace;
  let agentNs: TestNamespace;
  let cgroups: KubeletCgroups;
  let identity: ChartIdentity;
  let server: RunningServer;
  let dataDir: string;
  let imgDir: string;
  let aliceKubeconfig: string;
  let holderPid: number;
  let waiterPid: number;
  let sqlitePid: number;
  let agentPodName: string;
  const asked: string[] = [];

  beforeAll(async () => {
    cluster = await connectCluster();
    env = await setupNamespaceAndNode(cluster, 'plug');
    nsB = await createTestNamespace(cluster.kc, { prefix: 'lockmig-e2e-plugb', labels: { 'lockmig.dev/e2e': 'true' } });
    agentNs = await createTestNamespace(cluster.kc, { prefix: 'lockmig-e2e-plugsys', labels: { 'lockmig.dev/e2e': 'true' } });
    cgroups = new KubeletCgroups('plug');
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-plug-data-'));
    imgDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-plug-img-'));
    const ids = { db: containerID(), reader: containerID(), agent: containerID() };
    const db = await createRunningPod(cluster, {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'db-0', namespace: env.namespace },
      spec: {
        nodeName: env.node, volumes: [{ name: 'data', hostPath: { path: dataDir, type: 'Directory' } }],
        containers: [{ name: 'db', image: 'example/db', volumeMounts: [{ name: 'data', mountPath: dataDir }] }],
      },
    }, { db: ids.db });
    const reader = await createRunningPod(cluster, {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'reader-0', namespace: nsB.name },
      spec: {
        nodeName: env.node, volumes: [{ name: 'shared', persistentVolumeClaim: { claimName: 'shared-data' } }],
        containers: [{ name: 'reader', image: 'example/reader', volumeMounts: [{ name: 'shared', mountPath: dataDir }] }],
      },
    }, { reader: ids.reader });
    const agentPod = await createRunningPod(cluster, {
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name: `lockmig-agent-${suffix()}`, namespace: agentNs.name, labels: { 'app.kubernetes.io/component': 'agent', 'app.kubernetes.io/part-of': 'lockmig' } },
      spec: { nodeName: env.node, containers: [{ name: 'agent', image: 'example/lockmig', ports: [{ name: 'health', containerPort: 8081 }] }] },
    }, { agent: ids.agent });
    agentPodName = agentPod.metadata!.name!;

    const h = await cgroups.start(cgroups.container({ podUID: db.metadata!.uid!, containerID: ids.db }),
      ['python3', HOLDER, '--ofd', `${dataDir}/ofd.lock`, '--flock', `${dataDir}/flock.lock`, '--sqlite', `${dataDir}/app.db`]);
    holderPid = h.pid;
    const w = await cgroups.start(cgroups.container({ podUID: reader.metadata!.uid!, containerID: ids.reader }), ['python3', '-c', WAITER, `${dataDir}/ofd.lock`]);
    waiterPid = w.pid;
    // a second process of the reader: sqlite3 in its busy handler (F_SETLK, sleep, again): no kernel waiter, an open fd
    const sq = await cgroups.start(cgroups.container({ podUID: reader.metadata!.uid!, containerID: ids.reader }),
      ['sh', '-c', 'echo up; exec sqlite3 -cmd ".timeout 600000" "$0" "BEGIN EXCLUSIVE;"', `${dataDir}/app.db`]);
    sqlitePid = sq.pid;
    for (let i = 0; i < 200 && !fs.readFileSync('/proc/locks', 'utf8').includes(`-> POSIX  ADVISORY  WRITE ${waiterPid} `); i++) await new Promise((r) => setTimeout(r, 25));

    // the agent's endpoint, listing pods as the chart's agent
    identity = await chartIdentity(cluster, 'agent', agentNs.name, { release: `lockmig-e2e-${suffix()}` });
    const core = identity.kubeConfig.makeApiClient(CoreV1Api);
    const live = new LiveLockService({ node: env.node, listPods: async () => (await core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${env.node}` })).items });
    server = await startServer({ addr: '127.0.0.1:0', routes: { '/locks': (u) => live.handle(u) } });

    // alice: may list pods in namespace A only, and holds the chart's lock-viewer role in the agents' namespace
    const alice = await serviceAccountKubeconfig(cluster.kc, cluster.dir, env.namespace, 'alice');
    aliceKubeconfig = alice.kubeconfigPath;
    const subject = { kind: 'ServiceAccount', name: 'alice', namespace: env.namespace };
    const rbac = cluster.kc.makeApiClient(RbacAuthorizationV1Api);
    await rbac.createNamespacedRole({ namespace: env.namespace, body: { metadata: { name: 'pod-reader' }, rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list'] }, { apiGroups: [GROUP], resources: [PLURAL], verbs: ['get', 'list', 'create'] }] } });
    await rbac.createNamespacedRoleBinding({ namespace: env.namespace, body: { metadata: { name: 'alice-pod-reader' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'pod-reader' }, subjects: [subject] } });
    const viewer = await helmTemplate({ release: 'lockmig', namespace: agentNs.name, showOnly: ['templates/lock-viewer-rbac.yaml'] });
    ok(await kubectl(['apply', '--server-side', '--field-manager', 'lockmig-tests', '-f', '-'], { kubeconfig: cluster.kubeconfigPath, input: viewer.text }), 'apply lock-viewer ClusterRole');
    await rbac.createNamespacedRoleBinding({ namespace: agentNs.name, body: { metadata: { name: 'alice-lock-viewer' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'lockmig-lock-viewer' }, subjects: [subject] } });
  });

  afterAll(async () => {
    await server?.close();
    await cgroups?.cleanup();
    await identity?.cleanup();
    await nsB?.cleanup();
    await agentNs?.cleanup();
    await env?.cleanup();
    await cluster?.close();
    for (const d of [dataDir, imgDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  /** the agent's /locks over HTTP, in place of the API server's pod proxy */
  const transport = (): AgentTransport => async (agent, q) => {
    asked.push(agent.metadata!.name!);
    const qs = new URLSearchParams(q as Record<string, string>);
    return (await (await fetch(`http://127.0.0.1:${server.port}/locks?${qs}`)).json()) as NodeLocks;
  };

  /** runs the plugin as its executable would: exit code, stdout, stderr */
  async function plugin(args: string[], kubeconfig = cluster.kubeconfigPath) {
    let stdout = '';
    let stderr = '';
    let code: number;
    try {
      code = await runPlugin([...args, '--kubeconfig', kubeconfig], { stdout: (s) => { stdout += s; }, stderr: (s) => { stderr += s; }, transport });
    } catch (err) {
      if (!(err instanceof CliError)) throw err;
      stderr += `error: ${err.message}\n`;
      code = err.exitCode;
    }
    if (process.env.LOCKMIG_PLUGIN_CAPTURE) fs.appendFileSync(process.env.LOCKMIG_PLUGIN_CAPTURE, `$ kubectl lockmig ${args.join(' ')}${kubeconfig === aliceKubeconfig ? '   # as alice' : ''}\n${stdout}${stderr}(exit ${code})\n\n`);
    return { code, stdout, stderr };
  }

  it('locks -A: holders and the blocked reader of another namespace, grouped on the file, with in-container paths and volumes', async () => {
    const r = await plugin(['locks', '-A', '--agent-namespace', agentNs.name]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(asked).toContain(agentPodName);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAMESPACE\s+POD\s+CONTAINER\s+PID\s+FD\s+KIND\s+TYPE\s+RANGE\s+PATH\s+VOLUME\s+STATUS$/);
    const ofd = lines.findIndex((l) => l.includes(' OFD ') && l.includes('db-0'));
    expect(ofd).toBeGreaterThan(0);
    expect(lines[ofd]).toMatch(new RegExp(`^${env.namespace}\\s+db-0\\s+db\\s+${holderPid}\\s+\\d+\\s+OFD\\s+WRITE\\s+0-99\\s+${dataDir}/ofd.lock\\s+data \\(hostPath ${dataDir}\\)\\s+held, blocks 1, file shared by 2 pods$`));
    // the waiter right below the lock it waits for: the conflict is visible at a glance
    expect(lines[ofd + 1]).toMatch(new RegExp(`^${nsB.name}\\s+reader-0\\s+reader\\s+${waiterPid}\\s+\\d+\\s+POSIX\\s+WRITE\\s+0-EOF\\s+${dataDir}/ofd.lock\\s+shared \\(pvc shared-data\\)\\s+WAITING \\d+s for ${env.namespace}/db-0/db pid ${holderPid} fd \\d+ \\(OFD WRITE 0-99\\)$`));
    // waiters come first, then the other files
    expect(ofd).toBe(1);
    expect(lines.some((l) => /\sFLOCK\s+WRITE\s+0-EOF\s/.test(l) && l.includes(`${dataDir}/flock.lock`))).toBe(true);
    const sqLock = lines.findIndex((l) => /\sPOSIX\s+\w+\s+1073741824-/.test(l) && l.includes(`${dataDir}/app.db`));
    expect(sqLock).toBeGreaterThan(0);
    // sqlite3's busy wait is no kernel waiter: it shows as the reader pod's open fd on the same file, next to the lock
    await expect.poll(async () => (await plugin(['locks', '-A', '--path', 'app.db', '--agent-namespace', agentNs.name])).stdout, { timeout: 10_000 })
      .toMatch(new RegExp(`\\n${nsB.name}\\s+reader-0\\s+reader\\s+${sqlitePid}\\s+\\d+\\s+-\\s+-\\s+-\\s+${dataDir}/app.db\\s+shared \\(pvc shared-data\\)\\s+open, no lock`));
    // the same pids as the kernel's own table
    const pl = fs.readFileSync('/proc/locks', 'utf8');
    expect(pl).toMatch(new RegExp(`-> POSIX\\s+ADVISORY\\s+WRITE ${waiterPid} `));
    expect(pl).toMatch(new RegExp(`FLOCK\\s+ADVISORY\\s+WRITE ${holderPid} `));
  });

  it('-o wide adds node, host pid and device:inode; -o json and yaml give the agent\'s records', async () => {
    const wide = await plugin(['locks', '-A', '-o', 'wide', '--agent-namespace', agentNs.name]);
    expect(wide.stdout.split('\n')[0]).toMatch(/\sNODE\s+HOST-PID\s+FILE\s+STATUS$/);
    const ino = fs.statSync(`${dataDir}/ofd.lock`).ino;
    expect(wide.stdout).toMatch(new RegExp(`${env.node}\\s+${holderPid}\\s+[0-9a-f]{2}:[0-9a-f]{2}:${ino}\\s+held`));
    const json = await plugin(['locks', '-A', '-o', 'json', '--agent-namespace', agentNs.name]);
    const obj = JSON.parse(json.stdout) as { kind: string; items: NodeLocks[] };
    expect(obj.kind).toBe('NodeLocksList');
    expect(obj.items[0]!.waiters[0]!.holder.pod).toBe('db-0');
    const yaml = await plugin(['locks', '-n', env.namespace, '-o', 'yaml', '--agent-namespace', agentNs.name]);
    expect(yaml.stdout).toMatch(/^kind: NodeLocksList$/m);
  });

  it('locks POD -n NS and --path narrow the rows', async () => {
    const one = await plugin(['locks', 'db-0', '-n', env.namespace, '--agent-namespace', agentNs.name]);
    expect(one.code).toBe(0);
    // the reader of namespace B waits for this pod: so the NAMESPACE column is there
    expect(one.stdout.split('\n')[0]).toMatch(/^NAMESPACE\s+POD\s+CONTAINER/);
    expect(one.stdout).toMatch(new RegExp(`^${nsB.name}\\s+reader-0\\s`, 'm'));
    const alone = await plugin(['locks', '-n', env.namespace, '--path', 'flock', '--agent-namespace', agentNs.name]);
    expect(alone.stdout.split('\n')[0]).toMatch(/^POD\s+CONTAINER/);
    const sq = await plugin(['locks', '-A', '--path', 'app.db', '--agent-namespace', agentNs.name]);
    const rows = sq.stdout.trimEnd().split('\n').slice(1);
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.every((l) => l.includes(`${dataDir}/app.db`))).toBe(true);
    expect(rows.some((l) => l.includes(' POSIX '))).toBe(true);
    const none = await plugin(['locks', '-A', '--path', 'no-such-file', '--agent-namespace', agentNs.name]);
    expect([none.code, none.stdout, none.stderr]).toEqual([0, '', 'No locks found.\n']);
    const gone = await plugin(['locks', 'nope-0', '-n', env.namespace, '--agent-namespace', agentNs.name]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/pod "nope-0" not found/);
  });

  it('a user who may list pods in one namespace sees only that namespace (SelfSubjectAccessReview), the other side of a conflict redacted', async () => {
    const r = await plugin(['locks', '-A', '--agent-namespace', agentNs.name], aliceKubeconfig);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('db-0');
    expect(r.stdout).not.toContain(nsB.name);
    expect(r.stdout).not.toContain('reader-0');
    expect(r.stdout).not.toContain(String(waiterPid));
    // her lock blocks someone: she sees that much
    expect(r.stdout).toMatch(/\(hidden\)\s+\(hidden\)\s+-\s+\?\s+\?\s+POSIX\s+WRITE\s+0-EOF\s+\S+ofd.lock\s+<none>\s+WAITING/);
    expect(r.stderr).toMatch(/rows in 1 namespace\(s\) where you may not list pods are not shown/);
    const b = await plugin(['locks', '-n', nsB.name, '--agent-namespace', agentNs.name], aliceKubeconfig);
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(new RegExp(`may not list pods in namespace "${nsB.name}"`));
    expect(b.stdout).toBe('');
    const pod = await plugin(['locks', 'reader-0', '-n', nsB.name, '--agent-namespace', agentNs.name], aliceKubeconfig);
    expect(pod.code).toBe(1);
    // without the lock-viewer binding: a clear pointer to the RBAC doc
    const noViewer = await plugin(['locks', '-n', env.namespace, '--agent-namespace', env.namespace], aliceKubeconfig);
    expect(noViewer.code).toBe(1);
    expect(noViewer.stderr).toMatch(/no running lockmig agent on this node/);
  });

  it('checkpoint, status and inspect (api storage read from the ConfigMaps through the API)', async () => {
    const c = await plugin(['checkpoint', 'db-0', '-n', env.namespace, '--name', 'cp1']);
    expect(c.code).toBe(0);
    expect(c.stdout).toMatch(/lockcheckpoint.lockmig.dev\/cp1 created/);
    const custom = cluster.kc.makeApiClient(CustomObjectsApi);
    const cp = (await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: env.namespace, plural: PLURAL, name: 'cp1' })) as { spec: { sourcePodName: string; sourcePodUID: string } };
    expect(cp.spec.sourcePodName).toBe('db-0');
    expect(cp.spec.sourcePodUID).toMatch(/^[0-9a-f-]{36}$/);
    expect((await plugin(['checkpoint', 'db-0', '-n', env.namespace, '--mode', 'Sideways'])).code).toBe(2);

    // what an agent with api storage leaves behind: real images of the holder, as ConfigMaps
    writeCheckpoint(path.join(imgDir, 'db'), dumpProcesses({ pids: [holderPid] }));
    const plans = planConfigMaps('cp1', readImageFiles(imgDir, ['db']));
    const core = cluster.kc.makeApiClient(CoreV1Api);
    for (const p of plans) await core.createNamespacedConfigMap({ namespace: env.namespace, body: { metadata: { name: p.name }, binaryData: p.binaryData } });
    await custom.patchNamespacedCustomObjectStatus({
      group: GROUP, version: VERSION, namespace: env.namespace, plural: PLURAL, name: 'cp1',
      body: { status: { phase: 'Dumped', nodeName: env.node, locks: { posix: 1, ofd: 1, flock: 1, lease: 0, total: 3 }, agent: { nodeName: env.node, state: 'Dumped', storage: 'api', configMaps: plans.map((p) => ({ name: p.name, items: p.items })) } } },
    }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));

    const st = await plugin(['status', 'cp1', '-n', env.namespace]);
    expect(st.code).toBe(0);
    expect(st.stdout).toMatch(/^NAME\s+PHASE\s+SOURCE\s+NODE\s+TARGET\s+LOCKS\s+AGE\ncp1\s+Dumped\s+db-0\s+\S+\s+3\s+\d+s\n/);
    expect(st.stdout).toMatch(/Conditions:\n {2}<none>/);
    const all = await plugin(['status', '-A']);
    expect(all.stdout).toMatch(new RegExp(`^${env.namespace}\\s+cp1\\s+Dumped`, 'm'));

    const ins = await plugin(['inspect', 'cp1', '-n', env.namespace]);
    expect(ins.code).toBe(0);
    // exactly what `lockmig inspect` prints for the same images
    const local = runCli(['inspect', path.join(imgDir, 'db')]);
    expect(local.status).toBe(0);
    expect(ins.stdout).toBe(`== container db (LockCheckpoint ${env.namespace}/cp1, storage api)\n${local.stdout}`);
    expect(ins.stdout).toMatch(/OFD\s+WRITE/);
  });

  it('migrate: the checkpoint the stop hook would make (policy Workload), waited for; the pod deleted; the replacement followed to Restored', async () => {
    // no controller, agent, webhook or kubelet here: a stand-in writes the status they would write (docs/api.md)
    const apps = cluster.kc.makeApiClient(AppsV1Api);
    const sts = await apps.createNamespacedStatefulSet({ namespace: env.namespace, body: {
      metadata: { name: 'web' },
      spec: { serviceName: 'web', selector: { matchLabels: { app: 'web' } }, template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'web', image: 'example/web' }] } } },
    } });
    const pod = await createRunningPod(cluster, {
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name: 'web-0', namespace: env.namespace, labels: { app: 'web' }, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'web', uid: sts.metadata!.uid!, controller: true }] },
      spec: { nodeName: env.node, containers: [{ name: 'web', image: 'example/web' }] },
    }, { web: containerID() });
    const name = `web-0-${pod.metadata!.uid!.replace(/-/g, '').slice(0, 8)}`;
    const custom = cluster.kc.makeApiClient(CustomObjectsApi);
    const core = cluster.kc.makeApiClient(CoreV1Api);
    const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
    const status = (body: unknown) => custom.patchNamespacedCustomObjectStatus({ group: GROUP, version: VERSION, namespace: env.namespace, plural: PLURAL, name, body: { status: body } }, merge);
    const seen: { spec?: { sourcePodUID?: string; target?: { policy?: string } } } = {};
    const standIn = (async () => {
      const until = Date.now() + 20_000;
      let cp: typeof seen | undefined;
      while (!cp && Date.now() < until) {
        cp = await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: env.namespace, plural: PLURAL, name }).catch(() => undefined) as typeof seen | undefined;
        if (!cp) await new Promise((r) => setTimeout(r, 100));
      }
      Object.assign(seen, cp);
      await status({ phase: 'Dumping', nodeName: env.node });
      await new Promise((r) => setTimeout(r, 500));
      await status({ phase: 'Dumped', nodeName: env.node, locks: { posix: 1, ofd: 1, flock: 1, lease: 0, total: 3 } });
      // the plugin deletes the pod only now: no kubelet here, so it stays Terminating
      for (;;) {
        const p = await core.readNamespacedPod({ namespace: env.namespace, name: 'web-0' }).catch(() => undefined);
        if (!p || p.metadata?.deletionTimestamp) break;
        if (Date.now() > until) throw new Error('the plugin never deleted web-0');
        await new Promise((r) => setTimeout(r, 100));
      }
      await status({ phase: 'Restoring', restoredPod: { name: 'web-0', nodeName: env.node } });
      await new Promise((r) => setTimeout(r, 500));
      await status({ phase: 'Restored', restore: { podName: 'web-0', nodeName: env.node, state: 'Held', message: '3 lock(s) held by pod web-0 (2 handed over with their open file descriptions, never free; 1 re-taken; longest window 812 ms)' } });
    })();
    const r = await plugin(['migrate', 'web-0', '-n', env.namespace, '--timeout', '30s']);
    await standIn;
    expect(seen.spec?.target?.policy).toBe('Workload');
    expect(seen.spec?.sourcePodUID).toBe(pod.metadata!.uid);
    expect(r.code).toBe(0);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines[0]).toMatch(new RegExp(`^\\[\\d+\\.\\ds\\] lockcheckpoint.lockmig.dev/${name} created for ${env.namespace}/web-0 \\(StatefulSet web, target policy Workload\\)$`));
    const order = [/Dumping: the agent on/, /Dumped: 3 lock\(s\) \(POSIX 1, OFD 1, FLOCK 1\)/, /pod .*\/web-0 deleted; waiting for StatefulSet web/, /Restoring: pod web-0 on/, /Restored: 3 lock\(s\) held/];
    let at = 0;
    for (const re of order) {
      const i = lines.findIndex((l, k) => k >= at && re.test(l));
      expect(i, `${re} after line ${at} in:\n${r.stderr}`).toBeGreaterThanOrEqual(at);
      at = i + 1;
    }
    expect(lines.filter((l) => /Dumped:/.test(l))).toHaveLength(1);
    expect(r.stdout).toMatch(new RegExp(`^migrated ${env.namespace}/web-0 → pod web-0 on ${env.node}: 3 lock\\(s\\) held by pod web-0 .*\\(\\d+\\.\\ds\\)\\n$`));
  });

  it('checkpoint --wait: one line per phase, and a failed checkpoint exits 1 with the controller\'s message', async () => {
    const custom = cluster.kc.makeApiClient(CustomObjectsApi);
    const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
    const standIn = (async () => {
      for (let i = 0; i < 200; i++) {
        const cp = await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: env.namespace, plural: PLURAL, name: 'cp-wait' }).catch(() => undefined);
        if (cp) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const status = (body: unknown) => custom.patchNamespacedCustomObjectStatus({ group: GROUP, version: VERSION, namespace: env.namespace, plural: PLURAL, name: 'cp-wait', body: { status: body } }, merge);
      await status({ phase: 'Dumping', nodeName: env.node });
      await new Promise((r) => setTimeout(r, 500));
      await status({ phase: 'Failed', nodeName: env.node, message: 'agent on the node: no process of the pod was found in any kubelet cgroup' });
    })();
    const r = await plugin(['checkpoint', 'db-0', '-n', env.namespace, '--name', 'cp-wait', '--wait', '--timeout', '20s']);
    await standIn;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/lockcheckpoint.lockmig.dev\/cp-wait created\n.*Pending: waiting for the controller\n.*Dumping: the agent on .* reads the locks of pod db-0\n.*Failed: agent on the node: no process/);
    expect(r.stderr).toMatch(/error: LockCheckpoint .*\/cp-wait failed: agent on the node: no process of the pod/);
    expect(r.stdout).toBe('');
  });

  it('migrate refuses a pod no controller would recreate, and names what to do', async () => {
    const r = await plugin(['migrate', 'db-0', '-n', env.namespace]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/has no controller.*kubectl lockmig checkpoint/s);
  });

  it('the single-file bundle (npm run bundle:plugin, for krew) runs outside the repository and answers like the plugin', async () => {
    const b = spawnSync(process.execPath, [path.join(REPO_ROOT, 'scripts/bundle-plugin.mjs')], { encoding: 'utf8', cwd: REPO_ROOT });
    expect(b.status, b.stderr).toBe(0);
    const shaLine = /sha256 ([0-9a-f]{64})/.exec(b.stdout);
    expect(shaLine).not.toBeNull();
    const where = fs.mkdtempSync(path.join(os.tmpdir(), 'lockmig-krew-'));
    try {
      expect(spawnSync('tar', ['-xzf', path.join(REPO_ROOT, 'dist/plugin/kubectl-lockmig.tar.gz'), '-C', where]).status).toBe(0);
      // no package.json, no node_modules around it: only the file and node
      const run = (args: string[]) => spawnSync(path.join(where, 'kubectl-lockmig'), args, { encoding: 'utf8', cwd: where, env: { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin`, HOME: where } });
      const st = run(['status', '-A', '--kubeconfig', cluster.kubeconfigPath]);
      expect(st.status, st.stderr).toBe(0);
      const inProcess = await plugin(['status', '-A']);
      expect(st.stdout.replace(/\d+s$/gm, '')).toBe(inProcess.stdout.replace(/\d+s$/gm, ''));
      const bad = run(['locks', '-o', 'xml', '--kubeconfig', cluster.kubeconfigPath]);
      expect(bad.status).toBe(2);
    } finally {
      fs.rmSync(where, { recursive: true, force: true });
    }
  });

  it('usage errors exit 2; --help exits 0', async () => {
    expect((await plugin(['locks', '-A', '-n', 'x'])).code).toBe(2);
    expect((await plugin(['locks', '-o', 'xml'])).code).toBe(2);
    expect((await plugin(['frobnicate'])).code).toBe(2);
    const h = await plugin(['locks', '--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/Examples:\n {2}# who holds the lock/);
  });
});
