/**
 * The control plane of lockmig under faults:
 *  - the leading controller replica SIGKILLed right after a LockCheckpoint is created (the chart runs
 *    two replicas with leader election): the other replica takes the Lease and the checkpoint converges;
 *  - every controller replica killed at once: the Deployment recreates them and the checkpoint converges;
 *  - the webhook unavailable (scaled to 0) while a restore pod is created: failurePolicy Fail gives
 *    the user a clear error naming the webhook, pods that did not opt in are admitted as usual, and
 *    once the webhook is back the same `kubectl apply` works and the pod receives every lock.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SYSTEM_NS, apply, getCheckpoint, kubectl, kubectlOk, podOn, waitFor, IMAGES } from '../support/cluster.js';
import { restorePod } from '../support/workloads.js';
import { RUNS, componentPods, killPod, leader, record, settle, waitComponentsReady } from '../support/faults.js';
import {
  createCheckpoint, createRestorePod, deleteSource, diagnoseOnFailure, expectRestored, handoverReady, startSource, teardown, world, type World,
} from './common.js';

let w: World | undefined;
beforeAll(async () => { w = await world('fault-ctl'); });
afterAll(async () => {
  kubectl(['scale', 'deployment/lockmig-webhook', '-n', SYSTEM_NS, '--replicas=2']);
  teardown(w);
});

describe('controller killed', () => {
  for (let run = 1; run <= RUNS; run++) {
    it(`the leader dies mid-reconcile: the other replica takes the Lease and the checkpoint converges (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      const s = await startSource(x, `c1-${run}`);
      const before = await leader();
      // the leader dies, and the checkpoint arrives before anyone has noticed (its Lease still runs)
      const t0 = Date.now();
      killPod(x.insp, before);
      createCheckpoint(x, `c1-${run}`, s.name);
      const atKill = (await getCheckpoint(x.ns, `c1-${run}`))?.status?.phase ?? 'no status yet';
      const c = await settle(x.ns, `c1-${run}`, ['HandoverReady', 'Dumped', 'Failed'], 120_000);
      expect(c.status?.phase).toBe('HandoverReady');
      const converged = Date.now() - t0;
      const after = await leader();
      expect(after.name).not.toBe(before.name);
      await deleteSource(x, s);
      createRestorePod(x, s, `c1-${run}-r`, `c1-${run}`);
      const done = await expectRestored(x, s, `c1-${run}-r`, `c1-${run}`);
      record('controller leader killed (2 replicas)', 'checkpoint created while the dead leader\'s Lease still runs', 'held after retry',
        `status right after the create: ${atKill}; ${after.name} took the Lease; HandoverReady ${converged} ms after the kill; restored, ${done.status?.restore?.handedOver} handed over`, converged);
      await waitComponentsReady();
    });

    it(`every replica killed at once: the Deployment recreates them and the checkpoint converges (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      const s = await startSource(x, `c2-${run}`);
      const t0 = Date.now();
      for (const p of await componentPods('controller')) killPod(x.insp, p);
      createCheckpoint(x, `c2-${run}`, s.name);
      const c = await settle(x.ns, `c2-${run}`, ['HandoverReady', 'Dumped', 'Failed'], 150_000);
      expect(c.status?.phase).toBe('HandoverReady');
      const converged = Date.now() - t0;
      await deleteSource(x, s);
      createRestorePod(x, s, `c2-${run}-r`, `c2-${run}`);
      await expectRestored(x, s, `c2-${run}-r`, `c2-${run}`);
      record('controller killed (all replicas)', 'checkpoint created while no controller runs', 'held after retry', `HandoverReady ${converged} ms after the kill (the Deployment's new pods, then the Lease); restored`, converged);
      await waitComponentsReady();
    });
  }
});

describe('webhook unavailable', () => {
  for (let run = 1; run <= RUNS; run++) {
    it(`while a restore pod is created: a clear error; other pods unaffected; the retry once it is back holds every lock (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      const { source: s } = await handoverReady(x, `w1-${run}`);
      await deleteSource(x, s);
      const t0 = Date.now();
      kubectlOk(['scale', 'deployment/lockmig-webhook', '-n', SYSTEM_NS, '--replicas=0']);
      try {
        await waitFor('no webhook endpoints', () => kubectl(['get', 'endpoints', '-n', SYSTEM_NS, 'lockmig-webhook', '-o', 'jsonpath={.subsets[*].addresses[*].ip}']).stdout.trim() === '', 60_000);
        const refused = kubectl(['apply', '-f', '-'], { input: JSON.stringify(restorePod(x.node, x.ns, `w1-${run}-r`, s.data, `w1-${run}`)) });
        expect(refused.status).not.toBe(0);
        expect(refused.stderr).toMatch(/failed calling webhook "restore\.lockmig\.dev"/);
        expect(kubectl(['get', 'pod', '-n', x.ns, `w1-${run}-r`]).status).not.toBe(0);
        // a pod that did not opt in is admitted while the webhook is down
        apply([podOn(x.node, `plain-${run}`, x.ns, { containers: [{ name: 'p', image: IMAGES.workload, imagePullPolicy: 'IfNotPresent', command: ['sleep', '1'] }], restartPolicy: 'Never' })]);
        console.log(`[fault] kubectl apply with the webhook down: ${refused.stderr.trim()}`);
      } finally {
        kubectlOk(['scale', 'deployment/lockmig-webhook', '-n', SYSTEM_NS, '--replicas=2']);
      }
      await waitComponentsReady();
      createRestorePod(x, s, `w1-${run}-r`, `w1-${run}`);
      const done = await expectRestored(x, s, `w1-${run}-r`, `w1-${run}`);
      expect(done.status?.restore?.handedOver).toBe(2);
      record('webhook unavailable (0 replicas)', 'while the restore pod is created', 'held after retry',
        `kubectl apply refused with "failed calling webhook"; unopted pods admitted; retried once back: ${done.status?.restore?.handedOver} handed over, the vault kept the locks meanwhile`, Date.now() - t0);
    });
  }
});
