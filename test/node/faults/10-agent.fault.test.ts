/**
 * The node's agent SIGKILLed (all its processes) and its pod deleted, so the DaemonSet recreates it,
 * at each moment of a same-node migration. Whatever the moment, the migration ends with the restore
 * pod holding every lock (checked by sqlite3, flock(1), python3 and the kernel), and when the
 * agent's vault lost the descriptions it held, the checkpoint says so: condition HandoverLost and a
 * Warning event — never silently. When the source still runs, the new agent takes its descriptions
 * again instead (Normal event HandoverResumed): nothing was free, and the handover goes on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getCheckpoint, kubectl, waitFor } from '../support/cluster.js';
import { RUNS, armAgentKill, killAgent, record, settle, waitAgentBack } from '../support/faults.js';
import {
  createCheckpoint, createRestorePod, contendersRefused, deleteSource, diagnoseOnFailure, expectRestored, handoverLost, handoverReady,
  startSource, teardown, waitHandoverLostReported, world, type World,
} from './common.js';

let w: World | undefined;
beforeAll(async () => { w = await world('fault-agent'); });
afterAll(() => teardown(w));

const FAULT = 'agent killed (SIGKILL, pod recreated)';

describe(FAULT, () => {
  for (let run = 1; run <= RUNS; run++) {
    it(`before dispatch: the recreated agent takes the checkpoint; the restore pod holds the locks (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      const s = await startSource(x, `a1-${run}`);
      const t0 = Date.now();
      await killAgent(x.insp, x.node);
      createCheckpoint(x, `a1-${run}`, s.name);
      const c = await settle(x.ns, `a1-${run}`, ['HandoverReady', 'Dumped', 'Failed'], 150_000);
      expect(c.status?.phase, c.status?.conditions?.map((k) => k.message).join('; ')).not.toBe('Failed');
      await waitAgentBack(x.node);
      await deleteSource(x, s);
      createRestorePod(x, s, `a1-${run}-r`, `a1-${run}`);
      const done = await expectRestored(x, s, `a1-${run}-r`, `a1-${run}`);
      record(FAULT, 'before dispatch', 'held after retry', `${c.status?.phase} ${Date.now() - t0} ms after the kill; restored, ${done.status?.restore?.handedOver ?? 0} handed over`, Date.now() - t0);
    });

    it(`mid-dump: the dump is redone (or reported); the restore pod holds the locks (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      // a source with 20,000 more open fds: its dump takes long enough to be interrupted
      const s = await startSource(x, `a2-${run}`, { wideFds: 20_000 });
      const kill = await armAgentKill(x.node);
      createCheckpoint(x, `a2-${run}`, s.name);
      // kill the agent as soon as the checkpoint is dispatched to it
      const seen = await waitFor('dispatch', async () => {
        const c = await getCheckpoint(x.ns, `a2-${run}`);
        return c?.status?.phase && c.status.phase !== 'Pending' ? c : undefined;
      }, 60_000, 5);
      const t0 = Date.now();
      if (kill) kill(); else await killAgent(x.insp, x.node);
      // the killed agent writes nothing more: what the object says now is what it had reported
      const k = await getCheckpoint(x.ns, `a2-${run}`);
      const atKill = `${k?.status?.phase}/${k?.status?.agent?.state ?? 'no agent report'} (dispatch seen as ${seen.status?.phase})`;
      const c = await settle(x.ns, `a2-${run}`, ['HandoverReady', 'Dumped', 'Failed'], 150_000);
      expect(c.status?.phase, c.status?.conditions?.map((k) => k.message).join('; ')).not.toBe('Failed');
      await waitAgentBack(x.node);
      // a vault emptied by the kill is reported before a restore pod relies on it
      const after = await settle(x.ns, `a2-${run}`, ['HandoverReady', 'Dumped'], 30_000);
      await deleteSource(x, s);
      createRestorePod(x, s, `a2-${run}-r`, `a2-${run}`);
      const done = await expectRestored(x, s, `a2-${run}-r`, `a2-${run}`);
      const lost = handoverLost(done);
      const handed = done.status?.restore?.handedOver ?? 0;
      expect(handed === 2 || lost || c.status?.phase === 'Dumped', `handedOver ${handed}, HandoverLost ${lost}`).toBe(true);
      record(FAULT, 'mid-dump', lost ? 'reported lost' : 'held after retry',
        `status at the kill ${atKill}; then ${after.status?.phase}; restored, ${done.status?.restore?.handedOver ?? 0} handed over${lost ? ', HandoverLost reported' : ''}`, Date.now() - t0);
    });

    it(`after HandoverReady, source still running: the new agent takes the descriptions again (nothing was free); the restore pod receives them (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      const { source: s } = await handoverReady(x, `a3-${run}`);
      const t0 = Date.now();
      await killAgent(x.insp, x.node);
      const resumed = await waitFor('HandoverResumed', () => {
        const ev = kubectl(['get', 'events', '-n', x.ns, '--field-selector', `involvedObject.name=a3-${run},reason=HandoverResumed`, '-o', 'jsonpath={.items[*].message}']).stdout.trim();
        return ev || undefined;
      }, 90_000, 500);
      const now = await getCheckpoint(x.ns, `a3-${run}`);
      expect(now?.status?.phase).toBe('HandoverReady');
      expect(handoverLost(now!)).toBe(false);
      await waitAgentBack(x.node);
      await deleteSource(x, s);
      createRestorePod(x, s, `a3-${run}-r`, `a3-${run}`);
      const done = await expectRestored(x, s, `a3-${run}-r`, `a3-${run}`);
      expect(done.status?.restore?.handedOver).toBe(2);
      expect(handoverLost(done)).toBe(false);
      record(FAULT, 'after HandoverReady (source running)', 'held', `${resumed}; the restore pod received all ${done.status?.restore?.handedOver} descriptions`, Date.now() - t0);
    });

    it(`mid-handover, after the vault took the descriptions and the source is gone: the loss is reported; the restore pod re-takes (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      const { source: s } = await handoverReady(x, `a4-${run}`);
      await deleteSource(x, s);
      // the vault alone holds the OFD and flock locks now
      const held = contendersRefused(x, s);
      expect({ flock: held.flock, ofd: held.ofd }).toEqual({ flock: true, ofd: true });
      const t0 = Date.now();
      await killAgent(x.insp, x.node);
      const how = await waitHandoverLostReported(x, `a4-${run}`);
      await waitAgentBack(x.node);
      createRestorePod(x, s, `a4-${run}-r`, `a4-${run}`);
      const done = await expectRestored(x, s, `a4-${run}-r`, `a4-${run}`);
      record(FAULT, 'mid-handover (vault holds, source gone)', 'reported lost', `${how}; re-taken by the restore pod (${done.status?.restore?.handedOver ?? 0} handed over)`, Date.now() - t0);
    });

    it(`while the restore pod starts: it ends holding every lock, by handover or by a reported re-take (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      const { source: s } = await handoverReady(x, `a5-${run}`);
      await deleteSource(x, s);
      createRestorePod(x, s, `a5-${run}-r`, `a5-${run}`);
      const t0 = Date.now();
      await killAgent(x.insp, x.node);
      await waitAgentBack(x.node);
      const done = await expectRestored(x, s, `a5-${run}-r`, `a5-${run}`);
      const handed = done.status?.restore?.handedOver ?? 0;
      const lost = handoverLost(done);
      // never silent: either both descriptions were handed over, or the loss is on the checkpoint
      expect(handed === 2 || lost, `handedOver ${handed}, HandoverLost ${lost}`).toBe(true);
      // and no false alarm: descriptions the pod did receive were not lost
      if (handed === 2) expect(lost, 'HandoverLost although every description was handed over').toBe(false);
      record(FAULT, 'while the restore pod starts', lost ? 'reported lost' : 'held',
        lost ? `HandoverLost reported; re-taken (${handed} handed over)` : `all ${handed} descriptions handed over despite the kill`, Date.now() - t0);
    });
  }
});
