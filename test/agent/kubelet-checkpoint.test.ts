/**
 * A LockCheckpoint whose source is a kubelet checkpoint archive already on the node
 * (spec.source.kubeletCheckpoint, KEP-2008), end to end on a real kube-apiserver: the real
 * controller and the real agent, each acting as the chart's ServiceAccount (so the chart's RBAC,
 * including the controller's `get nodes`, is what they have), and a "kubelet checkpoint
 * directory" holding archives laid out like CRI-O's from a REAL CRIU 4.2 dump
 * (`criu dump --file-locks --leave-running`) of a container-like process (own pid and mount
 * namespace) holding POSIX, flock and OFD (at 2^62) locks on files with spaces in their names.
 *
 * The lock counts are checked against Debian's `crit decode` of the dump (a witness lockmig did
 * not write); the images the agent stored (ConfigMaps, or the node-local directory) are read by
 * `lockmig inspect`, the restore webhook's decision for a restore pod naming the checkpoint is
 * taken, and `lockmig restore` from the ConfigMap images takes the locks back: `flock -n` and
 * python3 fcntl contenders are refused. Hostile or wrong archives end Failed with their reason.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { Registry } from 'prom-client';
import { LABEL_NODE, parseLockCheckpoint, type LockCheckpoint } from '../../src/api/index.js';
import { Agent } from '../../src/agent/agent.js';
import { AGENT_MAX_BUFFERED_BYTES, importForCheckpoint } from '../../src/agent/import.js';
import { startController, type RunningController } from '../../src/controller/main.js';
import { dumpProcesses } from '../../src/engine/dump.js';
import { writeCheckpoint } from '../../src/image/index.js';
import { silentLogger } from '../../src/log/logger.js';
import { DEFAULT_WEBHOOK_CONFIG, decideRestore } from '../../src/webhook/mutate.js';
import { chartIdentity, type ChartIdentity } from '../support/envtest/index.js';
import { missing, runCli } from '../helpers/env.js';
import { criu4, criuDump, kubeletArchiveTree, missingCriu4, startCriuHolder, type CriuHolder } from '../helpers/criu.js';
import { contendFcntl, contendFlock, startRestored, waitGone, PYTHON } from '../helpers/workload.js';
import { connectCluster, createCheckpoint, getCheckpoint, setupNamespaceAndNode, suffix, waitForCheckpoint, type Cluster } from './support/virtual-pods.js';

const SUITE = 'kubelet checkpoint archive → LockCheckpoint (controller + agent, real API server, real CRIU dump)';
const skip = missing({ root: true, tools: ['crit', 'flock', 'unshare', 'tar', PYTHON], k8s: true }, SUITE) || missingCriu4(SUITE);
const P62 = 1n << 62n;
const MOUNT = '/data/vol a';

describe.skipIf(skip)(SUITE, () => {
  let cluster: Cluster;
  let env: Awaited<ReturnType<typeof setupNamespaceAndNode>>;
  let ids: ChartIdentity[] = [];
  let ctl: RunningController;
  const ac = new AbortController();
  let agent: Agent;
  const dirs: string[] = [];
  let kubeletDir: string;
  let storageRoot: string;
  let vol: string;
  let img: string;
  let holder: CriuHolder | undefined;
  /** what Debian's crit decodes from the dump's filelocks.img, by CRIU flag (1 POSIX, 2 FLOCK, 4 OFD, 8 LEASE) */
  let critCounts: { posix: number; flock: number; ofd: number; lease: number; total: number };
  const FILE = 'checkpoint-db-0_NS-db-2026-12-05T07:00:00Z.tar';
  let file: string;

  const tmp = (tag: string) => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), `lockmig-kcp-${tag}-`));
    dirs.push(d);
    return d;
  };
  const tar = (tree: string, out: string) => {
    const r = spawnSync('tar', ['-C', tree, '-cf', out, '.'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  };
  const archiveFor = (namespace: string, name: string, from = img) => {
    const tree = kubeletArchiveTree(from, path.join(tmp('tree'), 'a'), { namespace, name: 'db-0', uid: randomUUID(), container: 'db' });
    tar(tree, path.join(kubeletDir, name));
  };

  beforeAll(async () => {
    cluster = await connectCluster();
    env = await setupNamespaceAndNode(cluster, 'kcp');
    file = FILE.replace('NS', env.namespace);
    kubeletDir = tmp('kubelet-checkpoints');
    storageRoot = tmp('store');
    vol = tmp('vol');

    // the real thing: CRIU 4.2 dumps a container's locks, leaving it running, as CRI-O does for the kubelet
    const criu = criu4()!;
    holder = await startCriuHolder(vol, tmp('ctl'), { basic: true }, { mountAt: MOUNT, rootfs: tmp('rootfs') });
    img = path.join(tmp('img'), 'criu');
    criuDump(criu, holder.pid, img, holder.externals);
    const decoded = spawnSync('crit', ['decode', '-i', path.join(img, 'filelocks.img')], { encoding: 'utf8' });
    expect(decoded.status, decoded.stderr).toBe(0);
    const flags = (JSON.parse(decoded.stdout) as { entries: { flag: number }[] }).entries.map((e) => e.flag);
    const n = (f: number) => flags.filter((x) => x === f).length;
    critCounts = { posix: n(1), flock: n(2), ofd: n(4), lease: n(8), total: flags.length };

    // the kubelet's checkpoint directory: the archive, and what a hostile or careless user could name
    archiveFor(env.namespace, file);
    archiveFor('shop', 'checkpoint-db-0_shop-db-2026-12-05T07:00:00Z.tar');
    // a real CRIU 4.2 dump whose memfd and unlinked-while-open files hold locks (test/fixtures/criu/unmappable)
    archiveFor(env.namespace, 'unmappable.tar', fileURLToPath(new URL('../fixtures/criu/unmappable', import.meta.url)));
    fs.writeFileSync(path.join(kubeletDir, 'garbage.tar'), randomBytes(4096));
    const whole = fs.readFileSync(path.join(kubeletDir, file));
    fs.writeFileSync(path.join(kubeletDir, 'truncated.tar'), whole.subarray(0, Math.floor(whole.length / 2) + 100));
    const py = spawnSync(PYTHON, ['-c', [
      'import io, sys, tarfile',
      't = tarfile.open(sys.argv[1], "w")',
      'for n in ["checkpoint/../../../../etc/lockmig-escape", "spec.dump"]:',
      '    data = b"{}"; ti = tarfile.TarInfo(n); ti.size = len(data); t.addfile(ti, io.BytesIO(data))',
      't.close()',
    ].join('\n'), path.join(kubeletDir, 'traversal.tar')], { encoding: 'utf8' });
    expect(py.status, py.stderr).toBe(0);
    const outside = path.join(tmp('outside'), 'elsewhere.tar');
    fs.copyFileSync(path.join(kubeletDir, file), outside);
    fs.symlinkSync(outside, path.join(kubeletDir, 'link.tar'));
    fs.mkdirSync(path.join(kubeletDir, 'a-directory.tar'));

    // the controller and the agent, as the chart's ServiceAccounts
    const release = `lockmig-kcp-${suffix()}`;
    const ctlId = await chartIdentity(cluster, 'controller', env.namespace, { release, values: { controller: { leaderElect: false } } });
    const agentId = await chartIdentity(cluster, 'agent', env.namespace, { release });
    ids = [ctlId, agentId];
    ctl = await startController({
      kubeConfig: ctlId.kubeConfig, logger: silentLogger(), registry: new Registry(), namespace: env.namespace,
      config: { podWaitTimeoutMs: 4000, pollIntervalMs: 300, agentAcceptTimeoutMs: 30_000 },
    }, ac.signal);
    agent = new Agent({
      kc: agentId.kubeConfig, node: env.node, storageRoot, procRoot: '/proc', logger: silentLogger(),
      dump: dumpProcesses, write: writeCheckpoint, now: () => new Date(), kubeletCheckpointDir: kubeletDir, watchRestorePods: false,
    });
    await agent.start();
  }, 180_000);

  afterAll(async () => {
    holder?.kill();
    await agent?.stop();
    ac.abort();
    await ctl?.done;
    for (const id of ids) await id.cleanup();
    await env?.cleanup();
    await cluster?.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  const create = (name: string, spec: Record<string, unknown>) => createCheckpoint(cluster, { apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name, namespace: env.namespace }, spec });
  const finished = (name: string) => waitForCheckpoint(cluster, env.namespace, name, (c) => c?.status?.phase === 'Dumped' || c?.status?.phase === 'Failed', `${name} Dumped or Failed`, 60_000) as Promise<LockCheckpoint>;
  const ready = (cp: LockCheckpoint) => cp.status?.conditions?.find((c) => c.type === 'Ready');

  it('the dump holds what the holder took, as crit decodes it: 1 POSIX, 2 flock, 2 OFD', () => {
    expect(critCounts).toEqual({ posix: 1, flock: 2, ofd: 2, lease: 0, total: 5 });
  });

  it('api storage: Dumped with the archive\'s lock counts, in ConfigMaps that lockmig inspect reads, that a restore pod takes the locks from', async () => {
    await create('from-kubelet', { source: { kubeletCheckpoint: { node: env.node, file } } });
    const cp = await finished('from-kubelet');
    expect(ready(cp), JSON.stringify(cp.status)).toMatchObject({ status: 'True', reason: 'Dumped' });
    expect(cp.status!.locks).toEqual(critCounts);
    expect(cp.status).toMatchObject({ nodeName: env.node, files: 4 });
    expect(cp.status!.sourcePodUID).toBeUndefined();
    expect(cp.metadata.labels?.[LABEL_NODE]).toBe(env.node);
    const a = cp.status!.agent!;
    expect(a).toMatchObject({ state: 'Dumped', storage: 'api', containers: ['db'], skippedFds: 0 });
    expect(a.handoverSocket).toBeUndefined();
    expect(a.message).toContain(`imported from kubelet checkpoint ${file} (pod ${env.namespace}/db-0, container db, CRI-O, taken 2026-01-01T00:10:00.000Z)`);
    const events = (await cluster.core.listNamespacedEvent({ namespace: env.namespace })).items.filter((e) => e.involvedObject.name === 'from-kubelet');
    expect(events.map((e) => e.reason)).toEqual(expect.arrayContaining(['Dispatched', 'Dumped']));

    // the ConfigMaps, put back together as the restore pod's projected volume would: lockmig inspect reads them
    const images = tmp('projected');
    for (const ref of a.configMaps!) {
      const cm = await cluster.core.readNamespacedConfigMap({ name: ref.name, namespace: env.namespace });
      expect(cm.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'LockCheckpoint', name: 'from-kubelet', uid: cp.metadata.uid });
      for (const it of ref.items) {
        fs.mkdirSync(path.dirname(path.join(images, it.path)), { recursive: true });
        fs.writeFileSync(path.join(images, it.path), Buffer.from(cm.binaryData![it.key]!, 'base64'));
      }
    }
    const r = runCli(['inspect', path.join(images, 'db'), '--json']);
    expect(r.status, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.method).toBe('criu');
    expect(j.origin).toMatchObject({ kind: 'archive', engine: 'CRI-O', path: path.join(kubeletDir, file), container: { name: 'db' } });
    expect(j.locks.length).toBe(critCounts.total);
    expect(j.locks.filter((l: { kind: string }) => l.kind === 'OFD').map((l: { start: string }) => l.start).sort()).toEqual(['0', String(P62)]);
    expect(j.files.map((f: { path: string }) => f.path).sort()).toEqual([`${MOUNT}/flock file`, `${MOUNT}/flock shared`, `${MOUNT}/ofd big`, `${MOUNT}/posix lock.db`]);

    // the restore webhook wraps the imported container of a restore pod naming the checkpoint
    const parsed = parseLockCheckpoint(cp);
    const d = decideRestore({
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name: 'db-new', namespace: env.namespace, annotations: { 'lockmig.dev/restore-from': 'from-kubelet' }, labels: { 'lockmig.dev/restore': 'true' } },
      spec: { containers: [
        { name: 'db', image: 'python:3', command: ['python3', '/app.py'], volumeMounts: [{ name: 'data', mountPath: '/data' }] },
        { name: 'metrics', image: 'exporter', command: ['/exporter'] },
      ], volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'data-db-0' } }] },
    }, parsed, DEFAULT_WEBHOOK_CONFIG, { now: new Date().toISOString() });
    expect(d.allowed, d.message).toBe(true);
    const wrapped = (d.patch ?? []).filter((op) => op.path.startsWith('/spec/containers/') && op.path.endsWith('/command'));
    expect(wrapped.map((op) => op.path)).toEqual(['/spec/containers/0/command']);
    expect((wrapped[0] as { value: string[] }).value).toEqual(expect.arrayContaining(['restore', '--image', '/lockmig/images/db', '--allow', '/data', '--', 'python3', '/app.py']));

    // and the shim restores from those images: the source is gone, the new process holds every lock
    const pid = holder!.pid;
    holder!.kill();
    holder = undefined;
    await waitGone(pid);
    const root = tmp('newroot');
    const wrap = ['unshare', '--mount', 'sh', '-c', `mount --make-rprivate / && mkdir -p "${root}${MOUNT}" && mount --bind "${vol}" "${root}${MOUNT}" && exec "$@"`, 'sh'];
    const restored = await startRestored(path.join(images, 'db'), { root, allow: ['/data'], timeoutS: 5, wrap });
    try {
      expect(contendFlock('w', path.join(vol, 'flock file'))).toBe('busy');
      expect(contendFlock('w', path.join(vol, 'flock shared'))).toBe('busy');
      expect(contendFlock('r', path.join(vol, 'flock shared'))).toBe('acquired');
      expect(contendFcntl('ofd', 'w', path.join(vol, 'ofd big'), P62 + 5n, 1n)).toBe('busy');
      expect(contendFcntl('ofd', 'r', path.join(vol, 'ofd big'), 50n, 1n)).toBe('acquired');
      expect(contendFcntl('ofd', 'w', path.join(vol, 'ofd big'), 50n, 1n)).toBe('busy');
      expect(contendFcntl('posix', 'w', path.join(vol, 'posix lock.db'), 0n, 10n)).toBe('busy');
    } finally {
      restored.kill();
      await waitGone(restored.pid);
    }
    expect(contendFlock('w', path.join(vol, 'flock file'))).toBe('acquired'); // refused by the lock, nothing else
  });

  it('nodeLocal storage with lockKinds [OFD] and a renamed container: only the OFD locks, under that name; deleting the checkpoint deletes them', async () => {
    await create('ofd-only', { source: { kubeletCheckpoint: { node: env.node, file } }, lockKinds: ['OFD'], containers: ['app'], storage: { nodeLocal: {} } });
    const cp = await finished('ofd-only');
    expect(ready(cp), JSON.stringify(cp.status)).toMatchObject({ reason: 'Dumped' });
    expect(cp.status!.locks).toEqual({ posix: 0, flock: 0, ofd: critCounts.ofd, lease: 0, total: critCounts.ofd });
    const dir = path.join(storageRoot, env.namespace, 'ofd-only');
    expect(cp.status).toMatchObject({ imageLocation: dir, files: 1 });
    expect(cp.status!.agent).toMatchObject({ storage: 'nodeLocal', containers: ['app'] });
    expect(cp.status!.agent!.message).toContain('restored into container "app"');
    const r = runCli(['inspect', path.join(dir, 'app'), '--json']);
    expect(r.status, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.locks.map((l: { kind: string }) => l.kind)).toEqual(['OFD', 'OFD']);
    expect(j.files.map((f: { path: string }) => f.path)).toEqual([`${MOUNT}/ofd big`]);
    expect(fs.readdirSync(dir)).toEqual(['app']);

    await cluster.custom.deleteNamespacedCustomObject({ group: 'lockmig.dev', version: 'v1alpha1', namespace: env.namespace, plural: 'lockcheckpoints', name: 'ofd-only' });
    await waitForCheckpoint(cluster, env.namespace, 'ofd-only', (c) => c === undefined, 'the finalizer protocol', 30_000);
    expect(fs.existsSync(dir)).toBe(false);
  });

  const refused: [string, string, string, RegExp][] = [
    ['a file that is not there', 'checkpoint-gone.tar', 'ArchiveNotFound', /kubelet checkpoint "checkpoint-gone\.tar" is not in .*lockmig-kcp-kubelet-checkpoints-/],
    ['random bytes', 'garbage.tar', 'ArchiveInvalid', /garbage\.tar/],
    ['an archive cut short', 'truncated.tar', 'ArchiveInvalid', /truncated\.tar.*(offset|cut short|truncated|TRUNCATED)/i],
    ['an entry climbing out with ..', 'traversal.tar', 'ArchiveInvalid', /refusing an archive with path traversal/],
    ['a symlink to an archive elsewhere', 'link.tar', 'ArchiveRefused', /is a symbolic link/],
    ['a directory', 'a-directory.tar', 'ArchiveRefused', /is not a regular file \(a directory\)/],
    ['locks on files the archive cannot map (per fd, as the importer says)', 'unmappable.tar', 'UnrecordableLocks',
      /^2 locked fd\(s\) in kubelet checkpoint unmappable\.tar cannot be mapped to a file, so a restore would start without their locks: fd 7 of pid 17451 \(.*\): memfd: a MEMFD file cannot be reopened by path; fd 8 of pid 17451 \(.*gone.*\): deleted: unlinked while open/],
    ['another namespace\'s pod', 'checkpoint-db-0_shop-db-2026-12-05T07:00:00Z.tar', 'ArchiveNamespaceMismatch', /is of pod shop\/db-0, not of a pod in namespace/],
  ];
  it.each(refused)('%s ends Failed (AgentFailed, %s → %s) and stores nothing', async (_what, name, reason, msg) => {
    const ck = `bad-${reason.toLowerCase()}-${suffix()}`;
    await create(ck, { source: { kubeletCheckpoint: { node: env.node, file: name } } });
    const cp = await finished(ck);
    expect(cp.status!.phase).toBe('Failed');
    expect(ready(cp)).toMatchObject({ status: 'False', reason: 'AgentFailed' });
    expect(cp.status!.agent).toMatchObject({ state: 'Failed', reason });
    expect(cp.status!.agent!.message).toMatch(msg);
    expect(ready(cp)!.message).toContain(`(${reason})`);
    expect(fs.existsSync(path.join(storageRoot, env.namespace, ck, 'db', 'manifest.json'))).toBe(false);
    expect((await cluster.core.listNamespacedConfigMap({ namespace: env.namespace, labelSelector: `lockmig.dev/checkpoint-uid=${cp.metadata.uid}` })).items).toEqual([]);
  });

  it('a file name with a slash never reaches the agent: the API server refuses it; the agent re-checks what it is handed', async () => {
    for (const bad of ['../outside/elsewhere.tar', 'sub/x.tar', '/etc/shadow', '..']) {
      await expect(create(`slash-${suffix()}`, { source: { kubeletCheckpoint: { node: env.node, file: bad } } }))
        .rejects.toMatchObject({ code: 422, body: expect.stringContaining('spec.source.kubeletCheckpoint.file in body should match') });
    }
    // defence in depth: an object that bypassed the API server's validation
    const forged = {
      apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name: 'forged', namespace: env.namespace },
      spec: { source: { kubeletCheckpoint: { node: env.node, file: `../${path.basename(kubeletDir)}/${file}` } } },
    } as unknown as LockCheckpoint;
    const out = await importForCheckpoint(forged, { node: env.node, storageRoot, logger: silentLogger(), write: writeCheckpoint, now: () => new Date(), kubeletCheckpointDir: kubeletDir });
    expect(out.report).toMatchObject({ state: 'Failed', reason: 'InvalidSpec' });
    expect(out.report.message).toContain('not a path');
    expect(fs.existsSync(path.join(storageRoot, env.namespace, 'forged'))).toBe(false);
    // a PVC (written through a source pod's mount, which an archive has not): refused before anything is written
    const pvc = await importForCheckpoint({ ...forged, metadata: { name: 'forged-pvc', namespace: env.namespace }, spec: { source: { kubeletCheckpoint: { node: env.node, file } }, storage: { persistentVolumeClaim: { claimName: 'c' } } } } as LockCheckpoint,
      { node: env.node, storageRoot, logger: silentLogger(), write: writeCheckpoint, now: () => new Date(), kubeletCheckpointDir: kubeletDir });
    expect(pvc.report).toMatchObject({ state: 'Failed', reason: 'InvalidSpec' });
    expect(fs.existsSync(path.join(storageRoot, env.namespace, 'forged-pvc'))).toBe(false);
    // and an agent on another node leaves it alone
    const elsewhere = await importForCheckpoint({ ...forged, spec: { source: { kubeletCheckpoint: { node: 'other-node', file } } } } as LockCheckpoint,
      { node: env.node, storageRoot, logger: silentLogger(), write: writeCheckpoint, now: () => new Date(), kubeletCheckpointDir: kubeletDir });
    expect(elsewhere.report).toMatchObject({ state: 'Failed', reason: 'WrongNode' });
  });

  it('the agent holds at most AGENT_MAX_BUFFERED_BYTES of images in memory: a larger archive is refused, not an OOM-killed agent', async () => {
    expect(AGENT_MAX_BUFFERED_BYTES).toBe(256 << 20);
    const cp = parseLockCheckpoint({ metadata: { name: 'bounded', namespace: env.namespace }, spec: { source: { kubeletCheckpoint: { node: env.node, file } } } });
    const deps = { node: env.node, storageRoot, logger: silentLogger(), write: writeCheckpoint, now: () => new Date(), kubeletCheckpointDir: kubeletDir };
    const small = await importForCheckpoint(cp, { ...deps, maxBufferedBytes: 1024 });
    expect(small.report).toMatchObject({ state: 'Failed', reason: 'ArchiveInvalid' });
    expect(small.report.message).toMatch(new RegExp(`^kubelet checkpoint ${kubeletDir}/${file}: ${file}:.* would bring the images held in memory over 1024 bytes`));
    expect(fs.existsSync(path.join(storageRoot, env.namespace, 'bounded'))).toBe(false);
    // the same archive within the default bound: the image is written (the default storage is api: no ConfigMaps from here)
    const ok = await importForCheckpoint(cp, deps);
    expect(ok.report).toMatchObject({ state: 'Dumped', locks: critCounts, containers: ['db'] });
    expect(ok.configMaps?.length).toBe(1);
    expect(fs.existsSync(path.join(storageRoot, env.namespace, 'bounded', 'db', 'manifest.json'))).toBe(true);
    fs.rmSync(path.join(storageRoot, env.namespace, 'bounded'), { recursive: true });
  });

  it('a node that does not exist: Pending with NodeNotFound, then Failed after the bounded wait; never dispatched', async () => {
    await create('no-node', { source: { kubeletCheckpoint: { node: 'no-such-node', file } } });
    const pending = await waitForCheckpoint(cluster, env.namespace, 'no-node', (c) => c?.status?.phase === 'Pending', 'Pending', 10_000);
    expect(ready(pending!)).toMatchObject({ reason: 'NodeNotFound', message: 'node no-such-node named by spec.source.kubeletCheckpoint.node does not exist (kubectl get node no-such-node)' });
    const failed = await waitForCheckpoint(cluster, env.namespace, 'no-node', (c) => c?.status?.phase === 'Failed', 'Failed', 20_000);
    expect(ready(failed!)).toMatchObject({ reason: 'NodeNotFound', message: expect.stringContaining('gave up after 4s') });
    expect(failed!.status!.nodeName).toBeUndefined();
    expect(failed!.metadata.labels?.[LABEL_NODE]).toBeUndefined();
    expect((await getCheckpoint(cluster, env.namespace, 'no-node'))!.status!.agent).toBeUndefined();
  });
});
