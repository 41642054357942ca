/**
 * Restore pod creation → Running with its locks held (the readiness gate), five times: the
 * figure a user waits for in a migration. Printed (median, min, max), not asserted: speed is for
 * benchmarks; each run must still end with the locks held.
 */
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import {
  apply, createNamespace, deleteNamespace, diagnostics, kubectlOk, testNode, waitPodGone, waitPodReady, Inspector,
} from './support/cluster.js';
import { checkpoint, contend, dataDir, restorePod, startContender, startDatabase, waitDumped } from './support/workloads.js';

let ns = '';
let node = '';
let insp: Inspector;
beforeAll(async () => {
  node = await testNode();
  ns = await createNamespace('timing');
  insp = await Inspector.start(ns, node);
});
afterAll(() => {
  if (insp) insp.sh(`rm -rf '/host/var/tmp/lockmig-node-test/${ns}'`);
  if (ns) deleteNamespace(ns);
});

describe('restore pod start-up', () => {
  it('creation → Running with locks held, median of 5 (re-take of SQLite + OFD + flock)', async () => {
    onTestFailed(() => console.log(diagnostics([ns])));
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const d = dataDir(ns, `run${i}`);
      await startDatabase(node, ns, `src-${i}`, d);
      apply([checkpoint(ns, `t${i}`, `src-${i}`, { restore: { mode: 'Retake' } })]);
      expect((await waitDumped(ns, `t${i}`)).status?.phase).toBe('Dumped');
      kubectlOk(['delete', 'pod', '-n', ns, `src-${i}`, '--wait=true']);
      await waitPodGone(ns, `src-${i}`);
      const t0 = Date.now();
      apply([restorePod(node, ns, `dst-${i}`, d, `t${i}`)]);
      await waitPodReady(ns, `dst-${i}`);
      times.push(Date.now() - t0);
      const c = await startContender(node, ns, d, `c-${i}`);
      expect(contend.flock(ns, c).status).toBe(7);
      kubectlOk(['delete', 'pod', '-n', ns, `dst-${i}`, c, '--wait=false']);
    }
    const sorted = [...times].sort((a, b) => a - b);
    console.log(`[node] restore pod creation → Ready with locks held: median ${sorted[2]} ms (min ${sorted[0]}, max ${sorted[4]}; runs ${times.join(', ')})`);
    expect(times).toHaveLength(5);
  });
});
