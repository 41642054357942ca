/**
 * reconcile() as a specification: each case is one situation of a LockCheckpoint (object, pod,
 * time) and the decision the controller must take. The function is pure, so time is a parameter.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, reconcile, type PodView, type RawCheckpoint, type ReconcileResult } from '../../src/controller/reconcile.js';
import { FINALIZER_IMAGES, LABEL_NODE, type LockCheckpointStatus } from '../../src/api/lockcheckpoint.js';

const UID = '11111111-2222-3333-4444-555555555555';
const UID2 = '99999999-2222-3333-4444-555555555555';
const T0 = Date.parse('2026-01-01T00:00:00Z');
const at = (s: number) => new Date(T0 + s * 1000);
const iso = (s: number) => at(s).toISOString().replace('.000Z', 'Z');
const cfg = DEFAULT_CONFIG;

function ck(over: { spec?: unknown; status?: Partial<LockCheckpointStatus> | unknown; meta?: Record<string, unknown> } = {}): RawCheckpoint {
  return {
    metadata: { name: 'c1', namespace: 'ns', uid: 'ck-uid', generation: 1, resourceVersion: '7', creationTimestamp: iso(0), ...(over.meta ?? {}) },
    spec: over.spec ?? { sourcePodName: 'db-0' },
    ...(over.status !== undefined ? { status: over.status } : {}),
  };
}

function pod(over: { uid?: string; nodeName?: string | null; phase?: string; deleting?: boolean; containers?: string[] } = {}): PodView {
  return {
    metadata: { name: 'db-0', uid: over.uid ?? UID, ...(over.deleting ? { deletionTimestamp: iso(0) } : {}) },
    spec: { ...(over.nodeName === null ? {} : { nodeName: over.nodeName ?? 'node-a' }), containers: (over.containers ?? ['db']).map((name) => ({ name })) },
    status: { phase: over.phase ?? 'Running' },
  };
}

/** status as it is right after a dispatch at time `s` */
function dispatched(s: number, extra: Partial<LockCheckpointStatus> = {}): LockCheckpointStatus {
  const first = reconcile(ck(), pod(), at(s), cfg);
  return { ...(first.status as LockCheckpointStatus), ...extra };
}

function ready(r: ReconcileResult) {
  return r.status.conditions?.find((c) => c.type === 'Ready');
}

const agentDumped = (s: number, state: 'Dumped' | 'HandoverReady' = 'Dumped') => ({
  nodeName: 'node-a', podUID: UID, state, startTime: iso(s - 1), completionTime: iso(s), dumpMilliseconds: 850,
  imageLocation: '/var/lib/lockmig/checkpoints/ns/c1', locks: { posix: 2, flock: 1, ofd: 3, lease: 0, total: 6 }, files: 4, skippedFds: 1,
});

describe('reconcile: validation', () => {
  const bad: [string, unknown, RegExp][] = [
    ['missing sourcePodName', {}, /spec\.sourcePodName: is required/],
    ['storage with both members', { sourcePodName: 'p', storage: { nodeLocal: {}, persistentVolumeClaim: { claimName: 'x' } } }, /exactly one of api, nodeLocal or persistentVolumeClaim/],
    ['path escaping the storage root', { sourcePodName: 'p', storage: { nodeLocal: { path: '../other-ns/x' } } }, /spec\.storage\.nodeLocal\.path: must stay under the storage root/],
    ['bad restore mode', { sourcePodName: 'p', restore: { mode: 'Teleport' } }, /spec\.restore\.mode: must be one of Auto, Handover, Retake/],
  ];
  it.each(bad)('an invalid spec (%s) fails at once with reason InvalidSpec and a message naming the field', (_n, spec, msg) => {
    const r = reconcile(ck({ spec }), pod(), at(0), cfg);
    expect(r.status.phase).toBe('Failed');
    expect(ready(r)).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
    expect(ready(r)?.message).toMatch(msg);
    expect(r.labels).toBeUndefined();
    expect(r.finalizer).toBeUndefined();
    expect(r.events).toEqual([expect.objectContaining({ type: 'Warning', reason: 'InvalidSpec' })]);
    expect(r.requeueAfterMs).toBeUndefined();
  });

  it('spec.containers naming a container the pod does not have fails with InvalidSpec listing the pod\'s containers', () => {
    const r = reconcile(ck({ spec: { sourcePodName: 'db-0', containers: ['web'] } }), pod({ containers: ['db', 'sidecar'] }), at(0), cfg);
    expect(r.status.phase).toBe('Failed');
    expect(ready(r)?.message).toContain('"web"');
    expect(ready(r)?.message).toContain('db, sidecar');
  });
});

describe('reconcile: resolving the source pod', () => {
  it('a missing pod is Pending/SourcePodNotFound and is polled, not failed', () => {
    const r = reconcile(ck(), undefined, at(0), cfg);
    expect(r.status.phase).toBe('Pending');
    expect(ready(r)).toMatchObject({ status: 'False', reason: 'SourcePodNotFound', observedGeneration: 1 });
    expect(r.requeueAfterMs).toBe(cfg.pollIntervalMs);
    expect(r.status.startTime).toBe(iso(0));
    expect(r.events).toEqual([expect.objectContaining({ type: 'Warning', reason: 'SourcePodNotFound' })]);
  });

  it('a pod still missing after podWaitTimeout (counted from status.startTime) fails with SourcePodNotFound', () => {
    const first = reconcile(ck(), undefined, at(0), cfg);
    const s = cfg.podWaitTimeoutMs / 1000;
    const mid = reconcile(ck({ status: first.status }), undefined, at(s - 1), cfg);
    expect(mid.status.phase).toBe('Pending');
    expect(mid.requeueAfterMs).toBeLessThanOrEqual(1000);
    const r = reconcile(ck({ status: first.status }), undefined, at(s), cfg);
    expect(r.status.phase).toBe('Failed');
    expect(ready(r)?.reason).toBe('SourcePodNotFound');
    expect(ready(r)?.message).toMatch(/gave up after 120s/);
    expect(r.status.completionTime).toBe(iso(s));
  });

  it('a pod with another UID than the spec.sourcePodUID pin fails with SourcePodReplaced', () => {
    const r = reconcile(ck({ spec: { sourcePodName: 'db-0', sourcePodUID: UID2 } }), pod(), at(0), cfg);
    expect(r.status.phase).toBe('Failed');
    expect(ready(r)?.reason).toBe('SourcePodReplaced');
    expect(ready(r)?.message).toContain(UID2);
  });

  const waiting: [string, PodView, string][] = [
    ['unscheduled', pod({ nodeName: null, phase: 'Pending' }), 'PodNotScheduled'],
    ['scheduled but not running', pod({ phase: 'Pending' }), 'PodNotRunning'],
    ['terminating', pod({ deleting: true }), 'PodNotRunning'],
  ];
  it.each(waiting)('a pod that is %s leaves the checkpoint Pending with reason %s', (_n, p, reason) => {
    const r = reconcile(ck(), p, at(0), cfg);
    expect(r.status.phase).toBe('Pending');
    expect(ready(r)?.reason).toBe(reason);
    expect(r.labels).toBeUndefined();
    expect(r.requeueAfterMs).toBeGreaterThan(0);
  });

  it('a pod that already terminated (Succeeded/Failed) fails at once: its locks are gone', () => {
    const r = reconcile(ck(), pod({ phase: 'Succeeded' }), at(0), cfg);
    expect(r.status.phase).toBe('Failed');
    expect(ready(r)?.reason).toBe('PodNotRunning');
  });
});

describe('reconcile: dispatch', () => {
  it('a running pod is dispatched: node label, finalizer, status nodeName/sourcePodUID/dispatchTime, phase Dumping', () => {
    const r = reconcile(ck(), pod(), at(5), cfg);
    expect(r.labels).toEqual({ [LABEL_NODE]: 'node-a' });
    expect(r.finalizer).toBe('add');
    expect(r.status).toMatchObject({ phase: 'Dumping', nodeName: 'node-a', sourcePodUID: UID, dispatchTime: iso(5), startTime: iso(5), observedGeneration: 1 });
    expect(r.statusPatch).toMatchObject({ phase: 'Dumping', nodeName: 'node-a', sourcePodUID: UID });
    expect(r.status.conditions?.find((c) => c.type === 'Dispatched')).toMatchObject({ status: 'True', reason: 'Dispatched' });
    expect(r.events.map((e) => e.reason)).toEqual(['Dispatched']);
    expect(r.requeueAfterMs).toBe(cfg.agentAcceptTimeoutMs);
  });

  it('observedGeneration follows metadata.generation on status and on every condition', () => {
    const r = reconcile(ck({ meta: { generation: 4 } }), pod(), at(0), cfg);
    expect(r.status.observedGeneration).toBe(4);
    for (const c of r.status.conditions ?? []) expect(c.observedGeneration).toBe(4);
  });

  it('re-running on the written status changes nothing: no status write, no events, no metadata patch (no hot loop)', () => {
    const first = reconcile(ck(), pod(), at(5), cfg);
    const again = reconcile(ck({ status: first.status, meta: { labels: { [LABEL_NODE]: 'node-a' }, finalizers: [FINALIZER_IMAGES] } }), pod(), at(9), cfg);
    expect(again.statusPatch).toBeUndefined();
    expect(again.events).toEqual([]);
    expect(again.labels).toBeUndefined();
    expect(again.finalizer).toBeUndefined();
    expect(again.requeueAfterMs).toBe(cfg.agentAcceptTimeoutMs - 4000);
  });

  it('a controller that crashed after writing status but before the label repairs the label and finalizer', () => {
    const st = dispatched(5);
    const r = reconcile(ck({ status: st }), pod(), at(6), cfg);
    expect(r.labels).toEqual({ [LABEL_NODE]: 'node-a' });
    expect(r.finalizer).toBe('add');
    expect(r.statusPatch).toBeUndefined();
  });
});

describe('reconcile: while the agent works', () => {
  const meta = { labels: { [LABEL_NODE]: 'node-a' }, finalizers: [FINALIZER_IMAGES] };

  it('an agent that never answers fails the checkpoint with AgentUnavailable once agentAcceptTimeout passed since dispatchTime', () => {
    const st = dispatched(0);
    const s = cfg.agentAcceptTimeoutMs / 1000;
    expect(reconcile(ck({ status: st, meta }), pod(), at(s - 1), cfg).status.phase).toBe('Dumping');
    const r = reconcile(ck({ status: st, meta }), pod(), at(s), cfg);
    expect(r.status.phase).toBe('Failed');
    expect(ready(r)?.reason).toBe('AgentUnavailable');
    expect(ready(r)?.message).toContain('node-a');
    expect(r.events).toEqual([expect.objectContaining({ type: 'Warning', reason: 'AgentUnavailable' })]);
  });

  it('an agent that accepted but sends no heartbeat for dumpTimeout fails with Timeout', () => {
    const st = dispatched(0, { agent: { nodeName: 'node-a', podUID: UID, state: 'Dumping', startTime: iso(1), heartbeatTime: iso(10) } });
    const s = 10 + cfg.dumpTimeoutMs / 1000;
    const before = reconcile(ck({ status: st, meta }), pod(), at(s - 2), cfg);
    expect(before.status.phase).toBe('Dumping');
    expect(before.requeueAfterMs).toBe(2000);
    const r = reconcile(ck({ status: st, meta }), pod(), at(s), cfg);
    expect(ready(r)?.reason).toBe('Timeout');
    expect(r.status.phase).toBe('Failed');
  });

  it('a pod recreated under the same name while dumping fails with SourcePodReplaced', () => {
    const r = reconcile(ck({ status: dispatched(0), meta }), pod({ uid: UID2 }), at(3), cfg);
    expect(r.status.phase).toBe('Failed');
    expect(ready(r)?.reason).toBe('SourcePodReplaced');
    expect(ready(r)?.message).toContain(UID2);
  });

  it('a pod that vanishes mid-dump gets a bounded grace for the agent report, then SourcePodNotFound', () => {
    const first = reconcile(ck({ status: dispatched(0), meta }), undefined, at(3), cfg);
    expect(first.status.phase).toBe('Dumping');
    expect(ready(first)?.reason).toBe('SourcePodNotFound');
    const g = cfg.podGoneGraceMs / 1000;
    const r = reconcile(ck({ status: first.status, meta }), undefined, at(3 + g), cfg);
    expect(r.status.phase).toBe('Failed');
    expect(ready(r)?.reason).toBe('SourcePodNotFound');
  });

  it('a report from another node or about another pod UID is ignored', () => {
    const fromB = dispatched(0, { agent: { ...agentDumped(2), nodeName: 'node-b' } });
    expect(reconcile(ck({ status: fromB, meta }), pod(), at(3), cfg).status.phase).toBe('Dumping');
    const otherPod = dispatched(0, { agent: { ...agentDumped(2), podUID: UID2 } });
    expect(reconcile(ck({ status: otherPod, meta }), pod(), at(3), cfg).status.phase).toBe('Dumping');
  });

  it('an agent failure becomes Failed/AgentFailed carrying the agent\'s reason and message', () => {
    const st = dispatched(0, { agent: { nodeName: 'node-a', podUID: UID, state: 'Failed', reason: 'ProcessesNotFound', message: 'no process in cgroup' } });
    const r = reconcile(ck({ status: st, meta }), pod(), at(3), cfg);
    expect(r.status.phase).toBe('Failed');
    expect(ready(r)?.reason).toBe('AgentFailed');
    expect(ready(r)?.message).toContain('ProcessesNotFound');
    expect(ready(r)?.message).toContain('no process in cgroup');
  });
});

describe('reconcile: results', () => {
  const meta = { labels: { [LABEL_NODE]: 'node-a' }, finalizers: [FINALIZER_IMAGES] };

  it('an agent success becomes Dumped (Ready=True) with the counts, files, location and durations copied; locks counted once', () => {
    const st = dispatched(0, { agent: agentDumped(2) });
    const r = reconcile(ck({ status: st, meta }), pod(), at(3), cfg);
    expect(r.status.phase).toBe('Dumped');
    expect(ready(r)).toMatchObject({ status: 'True', reason: 'Dumped' });
    expect(r.status).toMatchObject({
      locks: { posix: 2, flock: 1, ofd: 3, lease: 0, total: 6 }, files: 4, skippedFds: 1, imageLocation: '/var/lib/lockmig/checkpoints/ns/c1',
      completionTime: iso(2), durations: { dumpMilliseconds: 850, totalMilliseconds: 2000 },
    });
    expect(r.locksMoved?.total).toBe(6);
    expect(r.events).toEqual([expect.objectContaining({ type: 'Normal', reason: 'Dumped' })]);
    const again = reconcile(ck({ status: r.status, meta }), undefined, at(50), cfg);
    expect(again.statusPatch).toBeUndefined();
    expect(again.locksMoved).toBeUndefined();
    expect(again.status.phase).toBe('Dumped'); // the pod being gone after the dump is the point of a migration
  });

  it('an agent holding the descriptions makes it HandoverReady', () => {
    const r = reconcile(ck({ status: dispatched(0, { agent: agentDumped(2, 'HandoverReady') }), meta }), pod(), at(3), cfg);
    expect(r.status.phase).toBe('HandoverReady');
    expect(ready(r)).toMatchObject({ status: 'True', reason: 'HandoverReady' });
  });

  it('the agent reporting its vault lost the descriptions sets HandoverLost True (and the phase falls back to Dumped)', () => {
    const lostAt = iso(40);
    const r = reconcile(ck({ status: dispatched(0, { agent: { ...agentDumped(2), handoverLostTime: lostAt } }), meta }), undefined, at(41), cfg);
    expect(r.status.phase).toBe('Dumped');
    expect(r.status.conditions?.find((c) => c.type === 'HandoverLost')).toMatchObject({ status: 'True', reason: 'HandoverLost' });
    expect(r.status.conditions?.find((c) => c.type === 'HandoverLost')?.message).toContain(lostAt);
    const fine = reconcile(ck({ status: dispatched(0, { agent: agentDumped(2, 'HandoverReady') }), meta }), pod(), at(3), cfg);
    expect(fine.status.conditions?.find((c) => c.type === 'HandoverLost')).toBeUndefined();
  });

  const lockCond = (r: ReconcileResult) => r.status.conditions?.find((c) => c.type === 'LocksHeld');
  const restorePod = (uid = '77777777-2222-3333-4444-555555555555'): PodView => ({ metadata: { name: 'db-new', uid, annotations: { 'lockmig.dev/restore-from': 'c1' } }, status: { phase: 'Running' } });

  it('restoredPod written by the webhook makes it Restoring (LocksHeld False) and records the pod UID once the pod exists', () => {
    const st = dispatched(0, { agent: agentDumped(2), restoredPod: { name: 'db-new', nodeName: 'node-b', time: iso(20) } });
    const r = reconcile(ck({ status: st, meta }), undefined, at(21), cfg, restorePod());
    expect(r.status.phase).toBe('Restoring');
    expect(ready(r)).toMatchObject({ status: 'True', reason: 'Restoring' });
    expect(lockCond(r)).toMatchObject({ status: 'False', reason: 'Restoring' });
    expect(lockCond(r)?.message).toContain('db-new');
    expect(r.statusPatch?.restoredPod).toEqual({ uid: '77777777-2222-3333-4444-555555555555' });
    // before the pod exists there is no UID to record; nor for another pod of that name (the source, terminating)
    expect(reconcile(ck({ status: st, meta }), undefined, at(21), cfg).statusPatch?.restoredPod).toBeUndefined();
    const other: PodView = { metadata: { name: 'db-new', uid: UID, deletionTimestamp: iso(20), annotations: { 'lockmig.dev/restore-from': 'c1' } } };
    expect(reconcile(ck({ status: st, meta }), undefined, at(21), cfg, other).statusPatch?.restoredPod).toBeUndefined();
    const notOurs: PodView = { metadata: { name: 'db-new', uid: UID2, annotations: { 'lockmig.dev/restore-from': 'another' } } };
    expect(reconcile(ck({ status: st, meta }), undefined, at(21), cfg, notOurs).statusPatch?.restoredPod).toBeUndefined();
  });

  it('the restore pod\'s report of its locks held makes it Restored with LocksHeld True, the window in the message and an event', () => {
    const st = dispatched(0, {
      agent: agentDumped(2), restoredPod: { name: 'db-new', nodeName: 'node-b', time: iso(20) },
      restore: { podName: 'db-new', nodeName: 'node-b', state: 'Held', heldTime: iso(22), locks: { posix: 1, flock: 1, ofd: 1, lease: 0, total: 3 }, handedOver: 2, windowMilliseconds: 4, message: '3 lock(s) held by pod db-new (…; longest window 4 ms)' },
    });
    const r = reconcile(ck({ status: st, meta }), undefined, at(23), cfg);
    expect(r.status.phase).toBe('Restored');
    expect(ready(r)).toMatchObject({ status: 'True', reason: 'Restored' });
    expect(lockCond(r)).toMatchObject({ status: 'True', reason: 'LocksHeld' });
    expect(ready(r)?.message).toContain('window 4 ms');
    expect(r.events).toContainEqual(expect.objectContaining({ type: 'Normal', reason: 'Restored' }));
  });

  it('a failed restore attempt keeps it Restoring with reason RestoreFailed and a Warning; a report about another pod is ignored', () => {
    const failed = dispatched(0, {
      agent: agentDumped(2), restoredPod: { name: 'db-new', time: iso(20) },
      restore: { podName: 'db-new', nodeName: 'node-a', state: 'Failed', reason: 'RestoreFailed', message: 'container db could not restore its locks (exit 3, LockTimeout)' },
    });
    const r = reconcile(ck({ status: failed, meta }), undefined, at(23), cfg);
    expect(r.status.phase).toBe('Restoring');
    expect(lockCond(r)).toMatchObject({ status: 'False', reason: 'RestoreFailed' });
    expect(r.events).toContainEqual(expect.objectContaining({ type: 'Warning', reason: 'RestoreFailed' }));
    const other = dispatched(0, { agent: agentDumped(2), restoredPod: { name: 'db-new', time: iso(20) }, restore: { podName: 'someone-else', nodeName: 'node-a', state: 'Held' } });
    expect(reconcile(ck({ status: other, meta }), undefined, at(23), cfg).status.phase).toBe('Restoring');
  });

  it('a restore pod deleted before it held the locks lets the claim lapse: restoredPod and restore cleared, back to HandoverReady, a Warning', () => {
    const st = dispatched(0, {
      agent: agentDumped(2, 'HandoverReady'), restoredPod: { name: 'db-new', uid: '77777777-2222-3333-4444-555555555555', time: iso(20) },
      restore: { podName: 'db-new', nodeName: 'node-a', state: 'Failed', reason: 'RestoreFailed', message: 'exit 3' },
    });
    // still there: it stays Restoring
    expect(reconcile(ck({ status: st, meta }), undefined, at(23), cfg, restorePod()).status.phase).toBe('Restoring');
    const r = reconcile(ck({ status: st, meta }), undefined, at(23), cfg);
    expect(r.status.phase).toBe('HandoverReady');
    expect(r.statusPatch).toMatchObject({ restoredPod: null, restore: null, phase: 'HandoverReady' });
    expect(r.events).toContainEqual(expect.objectContaining({ type: 'Warning', reason: 'RestorePodGone', message: expect.stringContaining('db-new') }));
    // once held, the claim stands even when the pod is gone
    const held = { ...st, restore: { podName: 'db-new', nodeName: 'node-a', state: 'Held', heldTime: iso(22) } };
    const kept = reconcile(ck({ status: held, meta }), undefined, at(30), cfg);
    expect(kept.status.phase).toBe('Restored');
    expect(kept.statusPatch?.restoredPod).toBeUndefined();
  });

  it('an admitted restore pod that was never created lapses after claimGraceMs; until then a requeue is due', () => {
    const st = dispatched(0, { agent: agentDumped(2), restoredPod: { name: 'db-new', time: iso(20) } });
    const early = reconcile(ck({ status: st, meta }), undefined, at(30), cfg);
    expect(early.status.phase).toBe('Restoring');
    expect(early.requeueAfterMs).toBeLessThanOrEqual(cfg.claimGraceMs);
    const late = reconcile(ck({ status: st, meta }), undefined, at(20 + cfg.claimGraceMs / 1000 + 1), cfg);
    expect(late.status.phase).toBe('Dumped');
    expect(late.statusPatch).toMatchObject({ restoredPod: null });
  });

  it('Failed is terminal: a pod that appears later does not restart the checkpoint', () => {
    const failed = reconcile(ck({ spec: { sourcePodName: 'db-0', sourcePodUID: UID2 } }), pod(), at(0), cfg);
    const r = reconcile(ck({ spec: { sourcePodName: 'db-0', sourcePodUID: UID2 }, status: failed.status }), pod({ uid: UID2 }), at(5), cfg);
    expect(r.status.phase).toBe('Failed');
    expect(r.statusPatch).toBeUndefined();
    expect(r.labels).toBeUndefined();
  });
});

describe('reconcile: a kubelet checkpoint archive as the source (spec.source.kubeletCheckpoint)', () => {
  const FILE = 'checkpoint-db-0_ns-db-2026-01-01T00:00:00Z.tar';
  const spec = { source: { kubeletCheckpoint: { node: 'node-b', file: FILE } } };
  const meta = { labels: { [LABEL_NODE]: 'node-b' }, finalizers: [FINALIZER_IMAGES] };
  const there = { exists: true };
  const gone = { exists: false };

  it('is dispatched to the named node without any pod: label, finalizer, nodeName, no sourcePodUID or source', () => {
    const r = reconcile(ck({ spec }), undefined, at(5), cfg, undefined, there);
    expect(r.status).toMatchObject({ phase: 'Dumping', nodeName: 'node-b', dispatchTime: iso(5) });
    expect(r.status.sourcePodUID).toBeUndefined();
    expect(r.status.source).toBeUndefined();
    expect(r.labels).toEqual({ [LABEL_NODE]: 'node-b' });
    expect(r.finalizer).toBe('add');
    expect(r.events).toEqual([expect.objectContaining({ type: 'Normal', reason: 'Dispatched', message: `dispatched to the agent on node node-b (kubelet checkpoint ${FILE})` })]);
    expect(ready(r)?.message).toContain(`import kubelet checkpoint ${FILE}`);
    expect(r.requeueAfterMs).toBe(cfg.agentAcceptTimeoutMs);
    // a pod that happens to carry the name is no concern of an archive checkpoint
    const again = reconcile(ck({ spec }), pod({ nodeName: 'node-a' }), at(5), cfg, undefined, there);
    expect(again.status.nodeName).toBe('node-b');
  });

  it('a node that does not exist is Pending/NodeNotFound (polled), then Failed after the same bounded wait as a missing pod', () => {
    const r = reconcile(ck({ spec }), undefined, at(0), cfg, undefined, gone);
    expect(r.status.phase).toBe('Pending');
    expect(ready(r)).toMatchObject({ status: 'False', reason: 'NodeNotFound' });
    expect(ready(r)?.message).toBe('node node-b named by spec.source.kubeletCheckpoint.node does not exist (kubectl get node node-b)');
    expect(r.status.nodeName).toBeUndefined();
    expect(r.labels).toBeUndefined();
    expect(r.finalizer).toBeUndefined();
    expect(r.requeueAfterMs).toBe(cfg.pollIntervalMs);
    expect(r.events).toEqual([expect.objectContaining({ type: 'Warning', reason: 'NodeNotFound' })]);
    const wait = cfg.podWaitTimeoutMs / 1000;
    const still = reconcile(ck({ spec, status: r.status }), undefined, at(wait - 1), cfg, undefined, gone);
    expect(still.status.phase).toBe('Pending');
    expect(still.requeueAfterMs).toBe(Math.min(cfg.pollIntervalMs, 1000));
    const f = reconcile(ck({ spec, status: r.status }), undefined, at(wait), cfg, undefined, gone);
    expect(f.status.phase).toBe('Failed');
    expect(ready(f)).toMatchObject({ reason: 'NodeNotFound' });
    expect(ready(f)?.message).toContain(`gave up after ${wait}s`);
    expect(f.events).toEqual([expect.objectContaining({ type: 'Warning', reason: 'NodeNotFound', message: expect.stringContaining('gave up') })]);
    // a node that appears in time is dispatched to
    const late = reconcile(ck({ spec, status: r.status }), undefined, at(wait - 1), cfg, undefined, there);
    expect(late.status).toMatchObject({ phase: 'Dumping', nodeName: 'node-b' });
  });

  it('while the agent imports, no pod is looked at (none exists): only the agent\'s answer and heartbeat count', () => {
    const st = reconcile(ck({ spec }), undefined, at(0), cfg, undefined, there).status;
    const mid = reconcile(ck({ spec, status: st, meta }), undefined, at(30), cfg);
    expect(mid.status.phase).toBe('Dumping');
    expect(ready(mid)?.reason).toBe('Dumping');
    const s = cfg.agentAcceptTimeoutMs / 1000;
    const r = reconcile(ck({ spec, status: st, meta }), undefined, at(s), cfg);
    expect(ready(r)).toMatchObject({ reason: 'AgentUnavailable' });
    const importing = { ...st, agent: { nodeName: 'node-b', state: 'Dumping' as const, startTime: iso(1), heartbeatTime: iso(1) } };
    expect(ready(reconcile(ck({ spec, status: importing, meta }), undefined, at(20), cfg))?.message).toBe('the agent on node node-b is importing the kubelet checkpoint');
  });

  it('the agent\'s import report makes it Dumped with the counts; its failure makes it Failed/AgentFailed with the agent\'s reason', () => {
    const st = reconcile(ck({ spec }), undefined, at(0), cfg, undefined, there).status;
    const agent = { ...agentDumped(2), nodeName: 'node-b', podUID: undefined, containers: ['db'] };
    const r = reconcile(ck({ spec, status: { ...st, agent }, meta }), undefined, at(3), cfg);
    expect(r.status).toMatchObject({ phase: 'Dumped', locks: { total: 6 }, files: 4 });
    expect(r.locksMoved?.total).toBe(6);
    const failed = { nodeName: 'node-b', state: 'Failed' as const, reason: 'ArchiveNotFound', message: `kubelet checkpoint "${FILE}" is not in /var/lib/kubelet/checkpoints` };
    const f = reconcile(ck({ spec, status: { ...st, agent: failed }, meta }), undefined, at(3), cfg);
    expect(f.status.phase).toBe('Failed');
    expect(ready(f)?.message).toBe(`agent on node node-b failed (ArchiveNotFound): ${failed.message}`);
  });

  it('an invalid archive spec (a path for a file name) fails with InvalidSpec before anything is dispatched', () => {
    const r = reconcile(ck({ spec: { source: { kubeletCheckpoint: { node: 'node-b', file: '../../etc/shadow' } } } }), undefined, at(0), cfg, undefined, there);
    expect(r.status.phase).toBe('Failed');
    expect(ready(r)).toMatchObject({ reason: 'InvalidSpec' });
    expect(ready(r)?.message).toContain('spec.source.kubeletCheckpoint.file');
    expect(r.labels).toBeUndefined();
  });
});

describe('reconcile: TTL after finish', () => {
  const meta = { labels: { [LABEL_NODE]: 'node-a' }, finalizers: [FINALIZER_IMAGES] };
  const spec = { sourcePodName: 'db-0', ttlSecondsAfterFinished: 60 };
  it('never expires the images from under a restore pod that lives and does not hold its locks yet', () => {
    const st = dispatched(0, { agent: agentDumped(2), restoredPod: { name: 'db-new', time: iso(5) } });
    const live: PodView = { metadata: { name: 'db-new', uid: UID2 }, status: { phase: 'Pending' } };
    const r = reconcile(ck({ spec, status: st, meta }), pod(), at(500), cfg, live);
    expect(r.delete).toBeUndefined();
    expect(r.requeueAfterMs).toBe(cfg.pollIntervalMs);
    // the pod is gone (or never held them and was deleted): the TTL applies again
    expect(reconcile(ck({ spec, status: st, meta }), pod(), at(500), cfg, undefined).delete).toBe(true);
    // it holds them: the TTL counts from then
    const held = { ...st, restore: { podName: 'db-new', nodeName: 'node-a', state: 'Held' as const, heldTime: iso(450) } };
    const r2 = reconcile(ck({ spec, status: held, meta }), pod(), at(500), cfg, live);
    expect(r2.delete).toBeUndefined();
    expect(r2.requeueAfterMs).toBe(10_000);
  });
  it('requeues until completionTime + ttl, then deletes the object', () => {
    const st = dispatched(0, { agent: agentDumped(2) });
    const r1 = reconcile(ck({ spec, status: st, meta }), pod(), at(3), cfg);
    expect(r1.delete).toBeUndefined();
    expect(r1.requeueAfterMs).toBe(59_000);
    const r2 = reconcile(ck({ spec, status: r1.status, meta }), pod(), at(62), cfg);
    expect(r2.delete).toBe(true);
    expect(r2.events).toEqual([expect.objectContaining({ reason: 'Expired' })]);
  });
  it('counts from the restore time when a restore happened later', () => {
    const st = dispatched(0, { agent: agentDumped(2), restoredPod: { name: 'n', time: iso(100) } });
    expect(reconcile(ck({ spec, status: st, meta }), pod(), at(150), cfg).delete).toBeUndefined();
    expect(reconcile(ck({ spec, status: st, meta }), pod(), at(160), cfg).delete).toBe(true);
  });
  it('a failed checkpoint expires too; a pending one never does', () => {
    const failed = reconcile(ck({ spec: { ...spec, sourcePodUID: UID2 } }), pod(), at(0), cfg);
    expect(reconcile(ck({ spec: { ...spec, sourcePodUID: UID2 }, status: failed.status }), pod(), at(60), cfg).delete).toBe(true);
    expect(reconcile(ck({ spec }), undefined, at(100), cfg).delete).toBeUndefined();
  });
});

describe('reconcile: deletion and the images finalizer', () => {
  const del = (status: LockCheckpointStatus | undefined, finalizers = [FINALIZER_IMAGES]) =>
    ck({ status, meta: { deletionTimestamp: iso(100), finalizers, labels: { [LABEL_NODE]: 'node-a' } } });

  it('a never-dispatched checkpoint loses the finalizer at once', () => {
    const r = reconcile(del({ phase: 'Pending' }), undefined, at(100), cfg);
    expect(r.finalizer).toBe('remove');
  });
  it('a dispatched one waits for the agent to confirm image deletion, then the finalizer goes', () => {
    const st = dispatched(0, { agent: agentDumped(2) });
    const waiting = reconcile(del(st), undefined, at(101), cfg);
    expect(waiting.finalizer).toBeUndefined();
    expect(waiting.statusPatch).toBeUndefined();
    expect(waiting.requeueAfterMs).toBeGreaterThan(0);
    const r = reconcile(del({ ...st, agent: { ...agentDumped(2), imagesDeleted: true } }), undefined, at(102), cfg);
    expect(r.finalizer).toBe('remove');
    expect(r.events).toEqual([expect.objectContaining({ type: 'Normal', reason: 'ImagesDeleted' })]);
  });
  it('an agent that never confirms: the finalizer is removed after imageDeletionTimeout with a Warning naming where images may remain', () => {
    const st = dispatched(0, { agent: agentDumped(2), imageLocation: '/var/lib/lockmig/checkpoints/ns/c1' });
    const r = reconcile(del(st), undefined, at(100 + cfg.imageDeletionTimeoutMs / 1000), cfg);
    expect(r.finalizer).toBe('remove');
    expect(r.events[0]).toMatchObject({ type: 'Warning', reason: 'ImagesNotDeleted' });
    expect(r.events[0]?.message).toContain('/var/lib/lockmig/checkpoints/ns/c1');
  });
  it('an object without our finalizer is left alone', () => {
    const r = reconcile(del(dispatched(0), []), undefined, at(101), cfg);
    expect(r.finalizer).toBeUndefined();
    expect(r.statusPatch).toBeUndefined();
  });
});

describe('reconcile: controller restart mid-flight', () => {
  it('a fresh controller process resumes from status alone: same decision, deadlines from stored timestamps', () => {
    // controller #1 dispatched at t=0 and died; controller #2 starts at t=30 with only the object.
    const st = dispatched(0);
    const meta = { labels: { [LABEL_NODE]: 'node-a' }, finalizers: [FINALIZER_IMAGES] };
    const r = reconcile(ck({ status: JSON.parse(JSON.stringify(st)), meta }), pod(), at(30), cfg);
    expect(r.statusPatch).toBeUndefined(); // no re-dispatch, no dispatchTime reset
    expect(r.labels).toBeUndefined();
    expect(r.requeueAfterMs).toBe(cfg.agentAcceptTimeoutMs - 30_000);
    expect(r.events).toEqual([]);
  });

  it('a malformed status.agent (hand edit) is ignored with a Warning instead of wedging the controller', () => {
    const st = dispatched(0, { agent: { nodeName: 'node-a', state: 'Exploded' } as never });
    const r = reconcile(ck({ status: st, meta: { labels: { [LABEL_NODE]: 'node-a' }, finalizers: [FINALIZER_IMAGES] } }), pod(), at(2), cfg);
    expect(r.status.phase).toBe('Dumping');
    expect(r.events.some((e) => e.reason === 'InvalidAgentReport' && e.type === 'Warning')).toBe(true);
  });
});
