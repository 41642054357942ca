/**
 * The workload itself misbehaving during a migration:
 *  - the source's process exits by itself (SIGKILL from the node, restartPolicy Never) right after the
 *    checkpoint is dispatched: the checkpoint ends Failed with a reason and a Warning event, or
 *    Dumped if the dump finished first (and then the restore pod holds the locks) — never stuck;
 *  - the source pod force-deleted right after the checkpoint is created: the same;
 *  - the restore pod deleted while it is being restored, then created again under the same name:
 *    the claim of the deleted pod lapses and the new pod holds every lock.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LockCheckpoint } from '../../../src/api/index.js';
import { getCheckpoint, kubectl, waitFor, waitPodGone } from '../support/cluster.js';
import { RUNS, localPodPids, record, settle, warnings } from '../support/faults.js';
import { restorePod } from '../support/workloads.js';
import {
  createCheckpoint, createRestorePod, deleteSource, diagnoseOnFailure, expectRestored, handoverReady, startSource, teardown, world, type Source, type World,
} from './common.js';

let w: World | undefined;
beforeAll(async () => { w = await world('fault-wl'); });
afterAll(() => teardown(w));

/** Failed with a reason and a Warning event, or Dumped and then restored: both are acceptable, silence is not. */
async function failedOrRestorable(x: World, s: Source, ck: string, t0: number): Promise<{ outcome: 'failed with reason' | 'held'; detail: string }> {
  const c: LockCheckpoint = await settle(x.ns, ck, ['HandoverReady', 'Dumped', 'Failed'], 200_000);
  if (c.status?.phase === 'Failed') {
    const ready = c.status.conditions?.find((k) => k.type === 'Ready');
    expect(ready?.reason, 'Failed carries a reason').toMatch(/^[A-Z][A-Za-z]+$/);
    expect(ready?.message ?? '').not.toBe('');
    const ev = await waitFor('a Warning event', () => { const l = warnings(x.ns, ck); return l.length > 0 ? l : undefined; }, 30_000);
    // a restore pod naming a failed checkpoint is refused with a clear error, not started without locks
    const r = kubectl(['apply', '-f', '-'], { input: JSON.stringify(restorePod(x.node, x.ns, `${ck}-r`, s.data, ck)) });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/lockmig/);
    return { outcome: 'failed with reason', detail: `Failed/${ready?.reason} in ${Date.now() - t0} ms: ${ready?.message}; event ${ev[0]}; a restore pod naming it is refused: ${r.stderr.trim().slice(0, 160)}` };
  }
  // the dump finished before the source went away: the migration goes on
  await deleteSource(x, s, true);
  createRestorePod(x, s, `${ck}-r`, ck);
  const done = await expectRestored(x, s, `${ck}-r`, ck);
  return { outcome: 'held', detail: `the dump finished first (${c.status?.phase}); restored, ${done.status?.restore?.handedOver ?? 0} handed over` };
}

describe('the workload misbehaves', () => {
  for (let run = 1; run <= RUNS; run++) {
    it(`the source's process exits by itself mid-dump: Failed with a reason, or dumped and restored (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      // 20,000 more open fds make its dump long enough to be interrupted
      const s = await startSource(x, `s1-${run}`, { restartPolicy: 'Never', wideFds: 20_000 });
      const local = localPodPids(s.uid);
      const pids = local ?? x.insp.podPids(s.uid);
      expect(pids.length).toBeGreaterThan(0);
      createCheckpoint(x, `s1-${run}`, s.name);
      await waitFor('dispatch', async () => { const c = await getCheckpoint(x.ns, `s1-${run}`); return c?.status?.phase !== undefined && c.status.phase !== 'Pending'; }, 60_000, 5);
      const t0 = Date.now();
      // on the kit the suite shares the node's pid namespace: the kill lands at once
      if (local) for (const p of local) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
      else x.insp.sh(`kill -9 ${pids.join(' ')}`);
      const atKill = (await getCheckpoint(x.ns, `s1-${run}`))?.status;
      const r = await failedOrRestorable(x, s, `s1-${run}`, t0);
      record('source process exits by itself', 'mid-dump (just dispatched)', r.outcome, `status at the exit: ${atKill?.phase}/${atKill?.agent?.state ?? 'no agent report'}; ${r.detail}`, Date.now() - t0);
    });

    it(`the source pod force-deleted mid-dump: Failed with a reason, or dumped and restored (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      const s = await startSource(x, `s2-${run}`, { wideFds: 20_000 });
      createCheckpoint(x, `s2-${run}`, s.name);
      await waitFor('dispatch', async () => { const c = await getCheckpoint(x.ns, `s2-${run}`); return c?.status?.phase !== undefined && c.status.phase !== 'Pending'; }, 60_000, 5);
      const t0 = Date.now();
      kubectl(['delete', 'pod', '-n', x.ns, s.name, '--grace-period=0', '--force', '--wait=false']);
      const atKill = (await getCheckpoint(x.ns, `s2-${run}`))?.status;
      const r = await failedOrRestorable(x, s, `s2-${run}`, t0);
      record('source pod deleted', 'mid-dump (just dispatched)', r.outcome, `status at the deletion: ${atKill?.phase}/${atKill?.agent?.state ?? 'no agent report'}; ${r.detail}`, Date.now() - t0);
    });

    it(`the restore pod deleted mid-restore and created again: the new pod holds every lock (run ${run})`, async () => {
      diagnoseOnFailure(() => w);
      const x = w!;
      const { source: s } = await handoverReady(x, `s3-${run}`);
      await deleteSource(x, s);
      createRestorePod(x, s, `s3-${run}-r`, `s3-${run}`);
      const claimed = await waitFor('the restore pod admitted', async () => { const c = await getCheckpoint(x.ns, `s3-${run}`); return c?.status?.restoredPod ? c : undefined; }, 30_000, 50);
      const t0 = Date.now();
      kubectl(['delete', 'pod', '-n', x.ns, `s3-${run}-r`, '--grace-period=0', '--force', '--wait=false']);
      await waitPodGone(x.ns, `s3-${run}-r`);
      const between = await getCheckpoint(x.ns, `s3-${run}`);
      createRestorePod(x, s, `s3-${run}-r`, `s3-${run}`);
      const done = await expectRestored(x, s, `s3-${run}-r`, `s3-${run}`);
      const first = claimed.status?.restoredPod?.uid ?? '(uid not yet recorded)';
      expect(done.status?.restoredPod?.uid).not.toBe(claimed.status?.restoredPod?.uid ?? 'none');
      const handed = done.status?.restore?.handedOver ?? 0;
      const lost = done.status?.conditions?.some((k) => k.type === 'HandoverLost' && k.status === 'True') ?? false;
      const how = handed === 2 ? 'the vault still held the descriptions: all handed over to the new pod'
        : lost ? 'HandoverLost reported; the new pod re-took them from the images'
          : 'the deleted pod had received the descriptions (they went with it); the new pod re-took every lock from the images';
      record('restore pod deleted and created again', 'mid-restore (admitted, starting)', lost ? 'reported lost' : 'held after retry',
        `first pod ${first} deleted while ${between?.status?.phase}; ${how}`, Date.now() - t0);
    });
  }
});
