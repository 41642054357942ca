/**
 * The agent's pure decisions: which assignment to act on (docs/api.md "Agent protocol"), and
 * which host processes belong to which container of the pod.
 */
import { describe, expect, it } from 'vitest';
import type { V1Pod } from '@kubernetes/client-node';
import { parseLockCheckpoint } from '../../src/api/index.js';
import { decideAgentAction } from '../../src/agent/decide.js';
import { bareContainerID, cgroupPodUID, selectContainers } from '../../src/agent/select.js';
import { RestorePodMatcher } from '../../src/agent/dump.js';
import { parseKubeletCgroupPath, parseProcCgroup } from '../../src/proc/cgroup.js';

const NODE = 'node-a';
function cp(status: Record<string, unknown> | undefined, meta: Record<string, unknown> = {}) {
  return parseLockCheckpoint({
    apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint',
    metadata: { name: 'm', namespace: 'ns', uid: 'u1', generation: 1, finalizers: ['lockmig.dev/images'], ...meta },
    spec: { sourcePodName: 'p' },
    ...(status ? { status } : {}),
  });
}

describe('decideAgentAction', () => {
  it.each([
    ['dispatched here, no report yet', { phase: 'Dumping', nodeName: NODE }, {}, 'dump'],
    ['an agent (maybe us before a restart) reported Dumping', { phase: 'Dumping', nodeName: NODE, agent: { nodeName: NODE, state: 'Dumping' } }, {}, 'dump'],
    ['already reported Dumped', { phase: 'Dumping', nodeName: NODE, agent: { nodeName: NODE, state: 'Dumped' } }, {}, 'none'],
    ['a terminal failure is never redone', { phase: 'Dumping', nodeName: NODE, agent: { nodeName: NODE, state: 'Failed', reason: 'X' } }, {}, 'none'],
    ['assigned to another node', { phase: 'Dumping', nodeName: 'node-b' }, {}, 'none'],
    ['not dispatched yet', { phase: 'Pending' }, {}, 'none'],
    ['no status at all', undefined, {}, 'none'],
    ['deleting, images still there', { phase: 'Dumped', nodeName: NODE, agent: { nodeName: NODE, state: 'Dumped' } }, { deletionTimestamp: '2026-11-26T23:00:00Z' }, 'delete-images'],
    ['deleting mid-dump still deletes', { phase: 'Dumping', nodeName: NODE }, { deletionTimestamp: '2026-11-26T23:00:00Z' }, 'delete-images'],
    ['deleting, images already deleted', { phase: 'Dumped', nodeName: NODE, agent: { nodeName: NODE, state: 'Dumped', imagesDeleted: true } }, { deletionTimestamp: '2026-11-26T23:00:00Z' }, 'none'],
    ['deleting without our finalizer', { phase: 'Dumped', nodeName: NODE }, { deletionTimestamp: '2026-11-26T23:00:00Z', finalizers: ['other'] }, 'none'],
    ['vault ready and a restore pod admitted', { phase: 'Restored', nodeName: NODE, agent: { nodeName: NODE, state: 'HandoverReady' }, restoredPod: { name: 'p2' } }, {}, 'identify-target'],
  ])('%s → %s', (_n, status, meta, kind) => {
    expect(decideAgentAction(cp(status as Record<string, unknown> | undefined, meta), NODE).kind).toBe(kind);
  });

  it.each([
    ['vault still holds it', { vaultHolds: true, vaultLost: false }, undefined, undefined, 'none'],
    ['vault lost it (restart or hold time over), nobody admitted', { vaultHolds: false, vaultLost: true }, undefined, undefined, 'handover-lost'],
    ['vault lost it after a restore pod was admitted, before it got them', { vaultHolds: false, vaultLost: true }, { name: 'p2' }, undefined, 'handover-lost'],
    ['vault delivered them to the admitted restore pod', { vaultHolds: false, vaultLost: false }, { name: 'p2' }, undefined, 'identify-target'],
    ['agent restarted after the restore pod holds the handed-over locks', { vaultHolds: false, vaultLost: true }, { name: 'p2' }, { podName: 'p2', nodeName: NODE, state: 'Held', handedOver: 2 }, 'identify-target'],
    // a restarted agent with no record of them: they may have been delivered just before; the pod's report decides
    ['agent restarted, no record, a restore pod admitted and not reporting yet', { vaultHolds: false, vaultLost: true, lossRecorded: false }, { name: 'p2' }, undefined, 'identify-target'],
    ['agent restarted, no record, the restore pod re-took them (0 handed over)', { vaultHolds: false, vaultLost: true, lossRecorded: false }, { name: 'p2' }, { podName: 'p2', nodeName: NODE, state: 'Held', handedOver: 0 }, 'handover-lost'],
    ['agent restarted, no record, the restore pod failed', { vaultHolds: false, vaultLost: true, lossRecorded: false }, { name: 'p2' }, { podName: 'p2', nodeName: NODE, state: 'Failed' }, 'handover-lost'],
    ['agent restarted, no record, nobody admitted (nobody could have received them)', { vaultHolds: false, vaultLost: true, lossRecorded: false }, undefined, undefined, 'handover-lost'],
    ['agent restarted, the previous vault held them when it died, restore pod admitted', { vaultHolds: false, vaultLost: true, lossRecorded: true }, { name: 'p2' }, undefined, 'handover-lost'],
  ])('HandoverReady and %s → %s', (_n, view, restoredPod, restore, kind) => {
    const c = cp({ phase: 'HandoverReady', nodeName: NODE, agent: { nodeName: NODE, state: 'HandoverReady', handoverSocket: '/run/lockmig/vault.sock' }, ...(restoredPod ? { restoredPod } : {}), ...(restore ? { restore } : {}) });
    expect(decideAgentAction(c, NODE, view).kind).toBe(kind);
  });
});

const CID = (c: string) => c.repeat(64);
function pod(over: Partial<V1Pod> = {}): V1Pod {
  return {
    metadata: { name: 'db-0', namespace: 'ns', uid: '0f8a1c3e-2b4d-4e6f-8a9b-0c1d2e3f4a5b' },
    spec: { containers: [{ name: 'db' }, { name: 'sidecar' }] },
    status: {
      containerStatuses: [
        { name: 'db', containerID: `containerd://${CID('a')}`, image: '', imageID: '', ready: true, restartCount: 0, state: { running: {} } },
        { name: 'sidecar', containerID: `containerd://${CID('b')}`, image: '', imageID: '', ready: true, restartCount: 0, state: { running: {} } },
      ],
    },
    ...over,
  };
}

describe('selectContainers', () => {
  const procs = [
    { pid: 10, containerID: CID('a'), cgroupPath: '/x' },
    { pid: 11, containerID: CID('a'), cgroupPath: '/x' },
    { pid: 20, containerID: CID('b'), cgroupPath: '/y' },
    { pid: 5, containerID: CID('c'), cgroupPath: '/pause' },
  ];

  it('maps container IDs from the pod status to names and leaves the sandbox out', () => {
    const s = selectContainers(pod(), procs, []);
    expect(s.ok).toBe(true);
    if (!s.ok) return;
    expect(s.containers).toEqual([{ name: 'db', containerID: CID('a'), pids: [10, 11] }, { name: 'sidecar', containerID: CID('b'), pids: [20] }]);
    expect(s.notes.join()).toContain('sandbox');
  });

  it('selects spec.containers only', () => {
    const s = selectContainers(pod(), procs, ['sidecar']);
    expect(s.ok && s.containers.map((c) => c.name)).toEqual(['sidecar']);
  });

  it.each([
    ['a container the pod lacks', ['wal'], procs, 'ContainerNotFound', 'no container "wal"'],
    ['no processes at all', [], [], 'ProcessesNotFound', 'hostPID'],
    ['a selected container without processes', ['sidecar'], procs.filter((p) => p.pid !== 20), 'ContainerNotRunning', 'container "sidecar"'],
  ])('fails with a reason for %s', (_n, wanted, ps, reason, msg) => {
    const s = selectContainers(pod(), ps, wanted);
    expect(s.ok).toBe(false);
    if (s.ok) return;
    expect(s.reason).toBe(reason);
    expect(s.message).toContain(msg);
  });

  it('reads container IDs of every runtime scheme and the static-pod UID', () => {
    expect(bareContainerID(`cri-o://${CID('D')}`)).toBe(CID('d'));
    expect(bareContainerID(`docker://${CID('e')}`)).toBe(CID('e'));
    expect(bareContainerID(undefined)).toBeUndefined();
    expect(cgroupPodUID(pod())).toBe('0f8a1c3e-2b4d-4e6f-8a9b-0c1d2e3f4a5b');
    expect(cgroupPodUID(pod({ metadata: { uid: 'mirror-uid', annotations: { 'kubernetes.io/config.mirror': '6c2e0a2b9f1f4c3d8e7a6b5c4d3e2f10' } } }))).toBe('6c2e0a2b9f1f4c3d8e7a6b5c4d3e2f10');
  });
});

describe('RestorePodMatcher (who may receive handed-over descriptions)', () => {
  const uid = '11111111-2222-4333-8444-555555555555';
  const peer = (p: string) => ({ cgroups: parseProcCgroup(`0::${p}\n`) });
  const inPod = (u: string) => `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${u.replace(/-/g, '_')}.slice/cri-containerd-${CID('f')}.scope`;

  it('refuses everyone until the restore pod is known, then only that pod', () => {
    const m = new RestorePodMatcher('ns/m.db', parseKubeletCgroupPath);
    expect(m.match(peer(inPod(uid)))).toMatchObject({ ok: false, notReady: true, reason: expect.stringContaining('no restore pod') });
    m.setTarget(uid);
    expect(m.match(peer(inPod(uid)))).toEqual({ ok: true });
    const other = m.match(peer(inPod('99999999-2222-4333-8444-555555555555')));
    expect(other).toMatchObject({ ok: false });
    expect((other as { notReady?: boolean }).notReady).toBeUndefined(); // a wrong pod is refused for good
    expect(m.match(peer('/system.slice/sshd.service'))).toMatchObject({ ok: false, reason: expect.stringContaining('not in any pod cgroup') });
    expect(m.describe()).toBe(`pod ${uid}`);
  });
});
