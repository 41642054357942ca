/**
 * A LockCheckpoint whose source is a kubelet checkpoint archive in the node's real kubelet
 * checkpoint directory (/var/lib/kubelet/checkpoints, mounted read-only into the chart's agent),
 * on the real node: the chart's controller dispatches it, the chart's agent imports it, and a
 * restore pod admitted by the real webhook starts through the real shim holding the locks —
 * checked by programs lockmig did not write (sqlite3, flock -n, python3 fcntl in a contender pod;
 * /proc/locks and fdinfo on the host).
 *
 * The archive: the node's kubelet cannot be asked for one here (the kit runs containerd without
 * the checkpoint API), so it is laid out the way CRI-O writes it — CRIU images under checkpoint/,
 * spec.dump with CRI-O's pod annotations, config.dump — with the CRIU images that
 * `lockmig export-criu` (run in the agent's own container) makes from a dump of a real database
 * pod holding SQLite (BEGIN EXCLUSIVE), OFD and flock locks. The source pod is then deleted; the
 * restore needs nothing of it but the archive.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import {
  SYSTEM_NS, apply, createNamespace, deleteNamespace, diagnostics, getPod, kubectlOk, testNode, waitCheckpoint, waitPodGone, waitPodReady, Inspector,
} from './support/cluster.js';
import { checkpoint, contend, dataDir, expectHeldBy, restorePod, startContender, startDatabase, waitDumped, waitLog } from './support/workloads.js';

const KUBELET_DIR = '/var/lib/kubelet/checkpoints';
let ns = '';
let node = '';
let insp: Inspector;
let archive = '';

beforeAll(async () => {
  node = await testNode();
  ns = await createNamespace('kcp');
  insp = await Inspector.start(ns, node);
  archive = `checkpoint-db-0_${ns}-db-2026-12-05T07:00:00Z.tar`;
});
afterAll(() => {
  if (insp) insp.sh(`rm -rf '/host/var/tmp/lockmig-node-test/${ns}' '/host${KUBELET_DIR}/${archive}' '/host${KUBELET_DIR}/link-${ns}.tar'`);
  if (ns) deleteNamespace(ns);
});
const report = () => onTestFailed(() => console.log(diagnostics([ns])));

/** Packs CRIU images as CRI-O lays out a kubelet checkpoint archive (argv: images dir, archive, namespace, pod uid). */
const PACK = String.raw`
import io, json, os, sys, tarfile
src, out, ns, uid = sys.argv[1:5]
spec = {'ociVersion': '1.0.2-dev', 'hostname': 'db-0', 'process': {'args': ['python3', '/usr/local/bin/holder.py']},
        'annotations': {'io.container.manager': 'cri-o', 'io.kubernetes.container.name': 'db', 'io.kubernetes.pod.name': 'db-0',
                        'io.kubernetes.pod.namespace': ns, 'io.kubernetes.pod.uid': uid}}
config = {'id': 'c0ffee' * 10 + 'c0ff', 'name': 'k8s_db_db-0_%s_%s_0' % (ns, uid), 'createdTime': '2026-12-05T06:00:00Z', 'checkpointedTime': '2026-12-05T07:00:00Z'}
tmp = out + '.part'
with tarfile.open(tmp, 'w') as t:
    for n in sorted(os.listdir(src)):
        t.add(os.path.join(src, n), arcname='checkpoint/' + n)
    for name, obj in (('spec.dump', spec), ('config.dump', config)):
        data = json.dumps(obj).encode()
        ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o600
        t.addfile(ti, io.BytesIO(data))
os.rename(tmp, out)
`;

describe('restore from a kubelet checkpoint archive on the node (spec.source.kubeletCheckpoint)', () => {
  const d = () => dataDir(ns, 'kcp');

  it('the agent imports the archive from the kubelet\'s checkpoint directory; a restore pod holds the locks; contenders are refused', async () => {
    report();
    const data = d();
    const src = await startDatabase(node, ns, 'db-0', data);
    apply([checkpoint(ns, 'src', 'db-0', { storage: { nodeLocal: {} }, restore: { mode: 'Retake' } })]);
    const dumped = await waitDumped(ns, 'src');
    expect(dumped.status?.phase, dumped.status?.message).toBe('Dumped');
    const want = dumped.status!.locks!;
    expect(want).toMatchObject({ flock: 1, ofd: 1 });
    expect(want.posix).toBeGreaterThan(0);

    // CRIU images of that dump, made in the agent's own container (its storage root is the host's)
    const agent = kubectlOk(['get', 'pods', '-n', SYSTEM_NS, '-l', 'app.kubernetes.io/component=agent', '--field-selector', `spec.nodeName=${node}`, '-o', 'jsonpath={.items[0].metadata.name}']).trim();
    expect(agent).not.toBe('');
    const storage = `/var/lib/lockmig/checkpoints/${node}`;
    const exported = `${storage}/kcp-export-${ns}`;
    kubectlOk(['exec', '-n', SYSTEM_NS, agent, '--', 'node', '/app/dist/src/cli/main.js', 'export-criu', `${storage}/${ns}/src/db`, exported]);
    // packed as CRI-O packs a kubelet checkpoint, into the kubelet's checkpoint directory on the node
    insp.shOk(`mkdir -p '/host${KUBELET_DIR}' && python3 -c '${PACK.replace(/'/g, `'"'"'`)}' '/host${exported}' '/host${KUBELET_DIR}/${archive}' '${ns}' '${src.metadata!.uid}' && rm -rf '/host${exported}'`);

    // the source goes away: nothing of it is needed any more
    kubectlOk(['delete', 'pod', '-n', ns, 'db-0', '--wait=true']);
    await waitPodGone(ns, 'db-0');

    apply([{ apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name: 'from-kubelet', namespace: ns }, spec: { source: { kubeletCheckpoint: { node, file: archive } } } }]);
    const imported = await waitDumped(ns, 'from-kubelet');
    expect(imported.status?.phase, imported.status?.message).toBe('Dumped');
    expect(imported.status!.locks).toEqual(want);
    expect(imported.status).toMatchObject({ nodeName: node, files: dumped.status!.files });
    expect(imported.status!.agent).toMatchObject({ storage: 'api', containers: ['db'] });
    expect(imported.status!.agent!.message).toContain(`imported from kubelet checkpoint ${archive} (pod ${ns}/db-0, container db, CRI-O`);
    const cms = kubectlOk(['get', 'configmaps', '-n', ns, '-l', `lockmig.dev/checkpoint-uid=${imported.metadata.uid}`, '-o', 'jsonpath={.items[*].metadata.ownerReferences[0].name}']);
    expect(cms.split(' ')).toEqual(['from-kubelet']);
    const wide = kubectlOk(['get', 'lckpt', 'from-kubelet', '-n', ns, '-o', 'wide']);
    expect(wide).toContain(archive);

    apply([restorePod(node, ns, 'db-1', data, 'from-kubelet')]);
    const ready = await waitPodReady(ns, 'db-1');
    expect(ready.status?.conditions?.find((c) => c.type === 'lockmig.dev/locks-held')).toMatchObject({ status: 'True', reason: 'LocksHeld' });
    const logs = await waitLog(ns, 'db-1', /"inherited"/);
    expect(logs).toMatch(/OFD:WRITE:0:99:\/data\/ofd.lock/);
    expect(logs).toMatch(/FLOCK:WRITE:0:EOF:\/data\/flock.lock/);
    const c = await startContender(node, ns, data, 'contender-kcp');
    const sq = contend.sqlite(ns, c);
    expect(sq.status).not.toBe(0);
    expect(sq.stderr + sq.stdout).toMatch(/database is locked/);
    expect(contend.flock(ns, c).status).toBe(7);
    expect(contend.ofd(ns, c).status).toBe(1);
    expectHeldBy(insp, data, ready.metadata!.uid!);
    const ck = await waitCheckpoint(ns, 'from-kubelet', (x) => x.status?.phase === 'Restored', 'Restored');
    expect(ck.status?.restore).toMatchObject({ state: 'Held', podName: 'db-1', handedOver: 0 });
    expect((await getPod(ns, 'db-1'))?.status?.phase).toBe('Running');
  });

  it('through the real read-only mount: a symlink in the kubelet\'s directory, a missing file, another namespace\'s archive end Failed with their reason', async () => {
    report();
    insp.shOk(`ln -sf '${KUBELET_DIR}/${archive}' '/host${KUBELET_DIR}/link-${ns}.tar'`);
    const cases: [string, string, string][] = [
      ['link', `link-${ns}.tar`, 'ArchiveRefused'],
      ['gone', `checkpoint-gone-${ns}.tar`, 'ArchiveNotFound'],
    ];
    for (const [name, file] of cases) apply([{ apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name, namespace: ns }, spec: { source: { kubeletCheckpoint: { node, file } } } }]);
    for (const [name, , reason] of cases) {
      const f = await waitDumped(ns, name);
      expect(f.status?.phase, f.status?.message).toBe('Failed');
      expect(f.status?.agent).toMatchObject({ state: 'Failed', reason });
    }
    // the archive of namespace ns, named from another namespace: refused by the agent
    const other = await createNamespace('kcp-other');
    try {
      apply([{ apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint', metadata: { name: 'steal', namespace: other }, spec: { source: { kubeletCheckpoint: { node, file: archive } } } }]);
      const f = await waitDumped(other, 'steal');
      expect(f.status?.phase).toBe('Failed');
      expect(f.status?.agent).toMatchObject({ state: 'Failed', reason: 'ArchiveNamespaceMismatch' });
      expect(kubectlOk(['get', 'configmaps', '-n', other, '-l', `lockmig.dev/checkpoint-uid=${f.metadata.uid}`, '-o', 'name']).trim()).toBe('');
    } finally {
      deleteNamespace(other);
    }
  });
});
