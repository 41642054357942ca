/**
 * Cleaning up as a user does: deleting a checkpoint deletes its images on the node; `helm
 * uninstall` (with a checkpoint still there) deletes every checkpoint through the finalizer
 * protocol first and then leaves nothing running, no Lease, no webhook registration — only the
 * CRD, which it keeps on purpose.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import {
  RELEASE, SYSTEM_NS, apply, createNamespace, deleteNamespace, diagnostics, helm, kubectl, kubectlOk, testNode, waitFor, Inspector,
} from './support/cluster.js';
import { checkpoint, dataDir, startDatabase, waitDumped } from './support/workloads.js';

let ns = '';
let node = '';
let insp: Inspector;
beforeAll(async () => {
  node = await testNode();
  ns = await createNamespace('uninstall');
  insp = await Inspector.start(ns, node);
});
afterAll(() => {
  if (insp) insp.sh(`rm -rf '/host/var/tmp/lockmig-node-test/${ns}'`);
  if (ns) deleteNamespace(ns);
});

describe('cleanup', () => {
  it('deleting a checkpoint deletes its images on the node first', async () => {
    onTestFailed(() => console.log(diagnostics([ns])));
    await startDatabase(node, ns, 'db-0', dataDir(ns));
    apply([checkpoint(ns, 'gone', 'db-0', { restore: { mode: 'Retake' } })]);
    await waitDumped(ns, 'gone');
    const dir = `/host/var/lib/lockmig/checkpoints/${ns}/gone`;
    expect(insp.sh(`test -s ${dir}/db/manifest.json`).status).toBe(0);
    kubectlOk(['delete', 'lckpt', '-n', ns, 'gone', '--wait=true', '--timeout=60s']);
    expect(insp.sh(`test -e ${dir}`).status).not.toBe(0);
  });

  it('helm uninstall removes every checkpoint with its images, then leaves nothing running and no Lease; the CRD stays', async () => {
    onTestFailed(() => console.log(diagnostics([ns])));
    apply([checkpoint(ns, 'left', 'db-0', { restore: { mode: 'Retake' } })]);
    await waitDumped(ns, 'left');
    const dir = `/host/var/lib/lockmig/checkpoints/${ns}/left`;
    expect(insp.sh(`test -d ${dir}`).status).toBe(0);

    const r = helm(['uninstall', RELEASE, '-n', SYSTEM_NS, '--wait', '--timeout', '180s'], { timeoutMs: 240_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(kubectlOk(['get', 'lckpt', '-A', '-o', 'name'])).toBe('');
    expect(insp.sh(`test -e ${dir}`).status, 'the agent deleted the images before it went away').not.toBe(0);
    await waitFor('no pod left in the release namespace', () => kubectlOk(['get', 'pods', '-n', SYSTEM_NS, '-o', 'name']).trim() === '', 120_000, 1000);
    expect(kubectlOk(['get', 'leases', '-n', SYSTEM_NS, '-o', 'name']).trim()).toBe('');
    expect(kubectl(['get', 'mutatingwebhookconfiguration', 'lockmig-webhook']).status).not.toBe(0);
    expect(kubectlOk(['get', 'clusterroles', '-o', 'name']).split('\n').filter((n) => n.includes('lockmig'))).toEqual([]);
    expect(kubectlOk(['get', 'crd', 'lockcheckpoints.lockmig.dev', '-o', 'name']).trim()).toBe('customresourcedefinition.apiextensions.k8s.io/lockcheckpoints.lockmig.dev');
    // the suite leaves the node as it found it (the agent's shim bundle stays on nodes by design)
    insp.sh('rm -rf /host/var/lib/lockmig /host/run/lockmig');
  });
});
