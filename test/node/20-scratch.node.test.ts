/**
 * A workload image FROM scratch — one static binary, no shell, no libc, no Node.js — restored
 * through the shim bundle the agent installed on the node (its own loader and libraries).
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import {
  IMAGES, apply, createNamespace, deleteNamespace, diagnostics, hostPathVolume, kubectlOk, podOn, testNode, waitCheckpoint, waitPodGone, waitPodReady,
  Inspector,
} from './support/cluster.js';
import { checkpoint, contend, dataDir, startContender, waitDumped, waitLog } from './support/workloads.js';

let ns = '';
let node = '';
let insp: Inspector;
beforeAll(async () => {
  node = await testNode();
  ns = await createNamespace('scratch');
  insp = await Inspector.start(ns, node);
});
afterAll(() => {
  if (insp) insp.sh(`rm -rf '/host/var/tmp/lockmig-node-test/${ns}'`);
  if (ns) deleteNamespace(ns);
});

describe('FROM scratch workload', () => {
  it('a static binary gets its flock, OFD and POSIX locks back before its first instruction', async () => {
    onTestFailed(() => console.log(diagnostics([ns])));
    const d = dataDir(ns);
    const vol = [hostPathVolume('data', d.host)];
    const mounts = [{ name: 'data', mountPath: '/data' }];
    apply([podOn(node, 'app-0', ns, {
      containers: [{ name: 'app', image: IMAGES.static, imagePullPolicy: 'IfNotPresent', command: ['/lockhold', '--flock', '/data/f.lock', '--ofd', '/data/o.lock', '--posix', '/data/p.lock'], volumeMounts: mounts }],
      volumes: vol,
    })]);
    await waitPodReady(ns, 'app-0');
    await waitLog(ns, 'app-0', /"fds"/);
    apply([checkpoint(ns, 'scratch', 'app-0', { restore: { mode: 'Retake' } })]);
    const ck = await waitDumped(ns, 'scratch');
    expect(ck.status?.locks).toMatchObject({ posix: 1, flock: 1, ofd: 1, total: 3 });
    kubectlOk(['delete', 'pod', '-n', ns, 'app-0', '--wait=true']);
    await waitPodGone(ns, 'app-0');

    apply([podOn(node, 'app-1', ns, {
      containers: [{ name: 'app', image: IMAGES.static, imagePullPolicy: 'IfNotPresent', command: ['/lockhold', '--adopt'], volumeMounts: mounts }],
      volumes: vol,
    }, { labels: { 'lockmig.dev/restore': 'true' }, annotations: { 'lockmig.dev/restore-from': 'scratch' } })]);
    const ready = await waitPodReady(ns, 'app-1');
    const out = await waitLog(ns, 'app-1', /"inherited"/);
    const report = JSON.parse(out.split('\n').find((l) => l.startsWith('{"pid"'))!) as { pid: number; inherited: string };
    expect(report.pid).toBe(1); // the shim exec'd the binary in place: same process, pid 1
    expect(report.inherited.split(';').map((e) => e.split(':').slice(1, 3).join(':')).sort()).toEqual(['FLOCK:WRITE', 'OFD:WRITE', 'POSIX:WRITE']);

    const c = await startContender(node, ns, d);
    expect(contend.flock(ns, c, '/data/f.lock').status).toBe(7);
    expect(contend.ofd(ns, c, '/data/o.lock').status).toBe(1);
    expect(contend.ofd(ns, c, '/data/p.lock').status, 'the POSIX lock conflicts with an OFD attempt too').toBe(1);
    const posix = insp.locksOn(`${d.host}/p.lock`).filter((l) => l.kind === 'POSIX');
    expect(posix).toHaveLength(1);
    expect(insp.podUIDOf(posix[0]!.pid)).toBe(ready.metadata!.uid);
    await waitCheckpoint(ns, 'scratch', (x) => x.status?.phase === 'Restored', 'Restored');
  });
});
