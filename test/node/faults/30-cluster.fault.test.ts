/**
 * The cluster's own daemons restarted under a migration (the kit's node only: the daemons are
 * stopped by PID and started again with their own command line, environment and log file):
 *  - kube-apiserver, right after a LockCheckpoint is created: every watch breaks; the controller
 *    and the agent re-establish them and the checkpoint converges; a checkpoint created after the
 *    restart converges too (so the watches really are back, not just a lucky relist);
 *  - kubelet, while the restore pod starts: the pod still ends up holding every lock, handed over;
 *  - containerd, after HandoverReady: the agent's container (and its vault) keep running; the
 *    restore pod afterwards receives every description.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCheckpoint } from '../support/cluster.js';
import { RUNS, needKit, record, restartDaemon, settle, waitApiServer, waitComponentsReady, waitNodeReady } from '../support/faults.js';
import {
  createCheckpoint, createRestorePod, deleteSource, diagnoseOnFailure, expectRestored, handoverReady, startSource, teardown, world, type World,
} from './common.js';

let w: World | undefined;
beforeAll(async () => { if (needKit('cluster daemons restarted')) w = await world('fault-k8s'); });
afterAll(() => teardown(w));

describe('cluster daemons restarted', () => {
  for (let run = 1; run <= RUNS; run++) {
    it(`kube-apiserver restarted right after a checkpoint is created: watches come back, both checkpoints converge (run ${run})`, async (ctx) => {
      if (!w) return ctx.skip();
      diagnoseOnFailure(() => w);
      const x = w;
      const s = await startSource(x, `k1-${run}`);
      createCheckpoint(x, `k1-${run}`, s.name);
      const t0 = Date.now();
      const { downMs } = await restartDaemon('kube-apiserver', { downMs: 3000 });
      await waitApiServer();
      const c = await settle(x.ns, `k1-${run}`, ['HandoverReady', 'Dumped', 'Failed'], 120_000);
      expect(c.status?.phase).toBe('HandoverReady');
      const converged = Date.now() - t0;
      // a checkpoint made after the restart is seen by the re-established watches
      const s2 = await startSource(x, `k1b-${run}`);
      const t1 = Date.now();
      createCheckpoint(x, `k1b-${run}`, s2.name);
      expect((await settle(x.ns, `k1b-${run}`, ['HandoverReady', 'Dumped', 'Failed'], 90_000)).status?.phase).toBe('HandoverReady');
      const second = Date.now() - t1;
      await deleteSource(x, s);
      createRestorePod(x, s, `k1-${run}-r`, `k1-${run}`);
      const done = await expectRestored(x, s, `k1-${run}-r`, `k1-${run}`);
      await waitComponentsReady();
      record('kube-apiserver restarted', 'after dispatch', 'held after retry',
        `API down ${downMs} ms; HandoverReady ${converged} ms after the stop; a checkpoint created afterwards HandoverReady in ${second} ms; restored, ${done.status?.restore?.handedOver} handed over`, converged);
    });

    it(`kubelet restarted while the restore pod starts: the pod holds every lock (run ${run})`, async (ctx) => {
      if (!w) return ctx.skip();
      diagnoseOnFailure(() => w);
      const x = w;
      const { source: s } = await handoverReady(x, `k2-${run}`);
      await deleteSource(x, s);
      createRestorePod(x, s, `k2-${run}-r`, `k2-${run}`);
      const t0 = Date.now();
      const { downMs } = await restartDaemon('kubelet', { downMs: 1000 });
      await waitNodeReady(x.node);
      const done = await expectRestored(x, s, `k2-${run}-r`, `k2-${run}`);
      expect(done.status?.restore?.handedOver).toBe(2);
      record('kubelet restarted', 'while the restore pod starts', 'held', `kubelet down ${downMs} ms; ${done.status?.restore?.handedOver} handed over, POSIX window ${done.status?.restore?.windowMilliseconds} ms`, Date.now() - t0);
    });

    it(`containerd restarted after HandoverReady: the vault keeps the descriptions; the restore pod receives them (run ${run})`, async (ctx) => {
      if (!w) return ctx.skip();
      diagnoseOnFailure(() => w);
      const x = w;
      const { source: s } = await handoverReady(x, `k3-${run}`);
      const t0 = Date.now();
      const { downMs } = await restartDaemon('containerd', { downMs: 1000 });
      await waitNodeReady(x.node);
      expect((await getCheckpoint(x.ns, `k3-${run}`))?.status?.phase).toBe('HandoverReady');
      await deleteSource(x, s);
      createRestorePod(x, s, `k3-${run}-r`, `k3-${run}`);
      const done = await expectRestored(x, s, `k3-${run}-r`, `k3-${run}`);
      expect(done.status?.restore?.handedOver).toBe(2);
      record('containerd restarted', 'after HandoverReady', 'held', `containerd down ${downMs} ms; ${done.status?.restore?.handedOver} handed over`, Date.now() - t0);
    });
  }
});
