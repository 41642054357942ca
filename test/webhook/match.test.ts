/**
 * Which checkpoint a new pod restores from when it names none (spec.target.policy), what a stop
 * (eviction, deletion) of an opted-in pod creates, and how a matched pod is wrapped: images from
 * the API mounted as one projected volume, no node pinning, the recorded command for an image
 * without an explicit one, and never a denial.
 */
import { describe, expect, it } from 'vitest';
import type { V1Pod } from '@kubernetes/client-node';
import { parseLockCheckpoint, type LockCheckpoint } from '../../src/api/index.js';
import { matchCandidates, matchCheckpoint, sameWorkload } from '../../src/webhook/match.js';
import { migratePolicy, stopCheckpoint, stopCheckpointName, stopMessage, stopProgress, wantsCheckpoint } from '../../src/webhook/stop.js';
import { DEFAULT_WEBHOOK_CONFIG, decideRestore } from '../../src/webhook/mutate.js';
import { sourceInfo } from '../../src/controller/reconcile.js';
import { applyJsonPatch } from './jsonpatch.js';

const SRC_UID = '11111111-2222-4333-8444-555555555555';

function ck(name: string, policy: string | undefined, over: { phase?: string; restoredPod?: string; created?: string; deleting?: boolean; source?: object; agent?: object; spec?: object } = {}): LockCheckpoint {
  return parseLockCheckpoint({
    apiVersion: 'lockmig.dev/v1alpha1', kind: 'LockCheckpoint',
    metadata: {
      name, namespace: 'prod', uid: '99999999-2222-4333-8444-555555555555', creationTimestamp: over.created ?? '2026-12-04T10:00:00Z',
      ...(over.deleting ? { deletionTimestamp: '2026-12-04T10:05:00Z' } : {}),
    },
    spec: { sourcePodName: 'db-0', ...(policy ? { target: { policy } } : {}), ...(over.spec ?? {}) },
    status: {
      phase: over.phase ?? 'Dumped', nodeName: 'node-a', sourcePodUID: SRC_UID,
      source: over.source ?? { podName: 'db-0', podUID: SRC_UID, workload: { kind: 'StatefulSet', name: 'db', uid: 'aaaaaaaa-2222-4333-8444-555555555555' }, labels: { app: 'db' } },
      ...(over.restoredPod ? { restoredPod: { name: over.restoredPod } } : {}),
      agent: { nodeName: 'node-a', state: 'Dumped', storage: 'api', configMaps: [{ name: `${name}-lockmig-0`, items: [{ key: 'db.manifest.json', path: 'db/manifest.json' }, { key: 'db.filelocks.img', path: 'db/filelocks.img' }] }], ...(over.agent ?? {}) },
    },
  });
}

const stsPod = (name = 'db-0', extra: Partial<V1Pod['metadata']> = {}): V1Pod => ({
  metadata: {
    name, namespace: 'prod', labels: { app: 'db', 'controller-revision-hash': 'db-7f9c', 'statefulset.kubernetes.io/pod-name': name, 'lockmig.dev/migrate': 'always' },
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'db', uid: 'aaaaaaaa-2222-4333-8444-555555555555', controller: true }], ...extra,
  },
  spec: { containers: [{ name: 'db', image: 'localhost/db:1', volumeMounts: [{ name: 'data', mountPath: '/data' }] }], volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'data-db-0' } }] },
});
const rsPod = (rs: string, labels: Record<string, string> = { app: 'web' }): V1Pod => ({
  metadata: { generateName: `${rs}-`, namespace: 'prod', labels: { ...labels, 'pod-template-hash': rs.split('-').pop()! }, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: rs, uid: 'bbbbbbbb-2222-4333-8444-555555555555', controller: true }] },
  spec: { containers: [{ name: 'web', image: 'x', command: ['/web'] }] },
});

describe('sourceInfo (recorded at dispatch)', () => {
  it('names a ReplicaSet pod\'s Deployment, keeps the other controllers by UID, drops per-revision labels', () => {
    expect(sourceInfo({ metadata: { name: 'web-5d8-abcde', uid: SRC_UID, labels: { app: 'web', 'pod-template-hash': '5d8' }, ownerReferences: [{ kind: 'ReplicaSet', name: 'web-5d8', uid: 'u', controller: true }] } }))
      .toEqual({ podName: 'web-5d8-abcde', podUID: SRC_UID, workload: { kind: 'Deployment', name: 'web' }, labels: { app: 'web' } });
    expect(sourceInfo(stsPod() as never).workload).toEqual({ kind: 'StatefulSet', name: 'db', uid: 'aaaaaaaa-2222-4333-8444-555555555555' });
    expect(sourceInfo(stsPod() as never).labels).toEqual({ app: 'db', 'lockmig.dev/migrate': 'always' });
    expect(sourceInfo({ metadata: { name: 'bare', uid: SRC_UID } })).toEqual({ podName: 'bare', podUID: SRC_UID });
  });
});

describe('matchCheckpoint', () => {
  it('SameName: the StatefulSet\'s new db-0 (no UID yet) restores; db-1 does not', () => {
    const c = ck('move', 'SameName');
    expect(matchCheckpoint(stsPod('db-0'), [c])?.metadata.name).toBe('move');
    expect(matchCheckpoint(stsPod('db-1'), [c])).toBeUndefined();
  });
  it('Workload: a pod of a later ReplicaSet of the same Deployment matches; another Deployment or other labels do not', () => {
    const src = { podName: 'web-5d8-abcde', podUID: SRC_UID, workload: { kind: 'Deployment', name: 'web' }, labels: { app: 'web' } };
    const c = ck('w', 'Workload', { source: src });
    expect(matchCheckpoint(rsPod('web-7c4'), [c])?.metadata.name).toBe('w');
    expect(matchCheckpoint(rsPod('webshop-7c4'), [c])).toBeUndefined();
    expect(matchCheckpoint(rsPod('web-7c4', { app: 'other' }), [c])).toBeUndefined();
    expect(sameWorkload(rsPod('web-7c4'), { ...src, workload: { kind: 'StatefulSet', name: 'web' } })).toBe(false);
  });
  it('Workload on a StatefulSet requires the same StatefulSet UID (a recreated StatefulSet of the same name is another one)', () => {
    const c = ck('s', 'Workload');
    expect(matchCheckpoint(stsPod('db-0'), [c])).toBeDefined();
    const other = stsPod('db-0');
    other.metadata!.ownerReferences![0]!.uid = 'cccccccc-2222-4333-8444-555555555555';
    expect(matchCheckpoint(other, [c])).toBeUndefined();
  });
  it('only ready, unclaimed, live checkpoints with a policy; the oldest wins', () => {
    const pod = stsPod('db-0');
    expect(matchCheckpoint(pod, [ck('a', undefined)])).toBeUndefined(); // Annotated (default)
    expect(matchCheckpoint(pod, [ck('a', 'SameName', { phase: 'Dumping' })])).toBeUndefined();
    expect(matchCheckpoint(pod, [ck('a', 'SameName', { deleting: true })])).toBeUndefined();
    expect(matchCheckpoint(pod, [ck('a', 'SameName', { restoredPod: 'db-0-old' })])).toBeUndefined();
    // claimed by an earlier db-0: a new db-0 (no annotation) never gets it
    expect(matchCheckpoint(pod, [ck('a', 'SameName', { phase: 'Restored', restoredPod: 'db-0' })])).toBeUndefined();
    const newer = ck('newer', 'SameName', { created: '2026-12-04T11:00:00Z' });
    const older = ck('older', 'SameName', { created: '2026-12-04T09:00:00Z', phase: 'HandoverReady' });
    expect(matchCheckpoint(pod, [newer, older])?.metadata.name).toBe('older');
    expect(matchCheckpoint({ ...pod, metadata: { ...pod.metadata, namespace: 'other' } }, [older])).toBeUndefined();
  });

  it('with includeClaimed, claims still in flight (Restoring) are candidates for a look at their pod; a restored one never', () => {
    const pod = stsPod('db-0');
    const inFlight = ck('a', 'SameName', { phase: 'Restoring', restoredPod: 'db-0' });
    const restored = ck('b', 'SameName', { phase: 'Restored', restoredPod: 'db-0' });
    expect(matchCandidates(pod, [inFlight, restored]).map((c) => c.metadata.name)).toEqual([]);
    expect(matchCandidates(pod, [inFlight, restored], { includeClaimed: true }).map((c) => c.metadata.name)).toEqual(['a']);
  });
});

describe('a matched pod is wrapped', () => {
  const cfg = DEFAULT_WEBHOOK_CONFIG;
  it('with the images from the API (one projected volume), unpinned, annotated, gated, using the recorded command of the same image', () => {
    const c = ck('move', 'SameName', { agent: { commands: [{ container: 'db', image: 'localhost/db:1', argv: ['/usr/bin/db', '--data', '/data'] }] } });
    const pod = stsPod('db-0');
    const d = decideRestore(pod, c, cfg, { now: '2026-12-04T10:01:00Z', namespace: 'prod', matched: true });
    expect(d.allowed).toBe(true);
    expect(d.notRestored).toBeUndefined();
    const out = applyJsonPatch(pod, d.patch!);
    expect(out.metadata!.annotations).toEqual({ 'lockmig.dev/restore-from': 'move' });
    expect(out.spec!.volumes).toContainEqual({ name: 'lockmig-images', projected: { sources: [{ configMap: { name: 'move-lockmig-0', items: [{ key: 'db.manifest.json', path: 'db/manifest.json' }, { key: 'db.filelocks.img', path: 'db/filelocks.img' }] } }] } });
    expect(out.spec!.affinity).toBeUndefined();
    const cmd = out.spec!.containers[0]!.command!;
    expect(cmd.slice(cmd.indexOf('--'))).toEqual(['--', '/usr/bin/db', '--data', '/data']);
    expect(out.spec!.readinessGates).toEqual([{ conditionType: 'lockmig.dev/locks-held' }]);
  });
  it('is admitted unchanged, with the reason, when it cannot be wrapped (another image and no command)', () => {
    const c = ck('move', 'SameName', { agent: { commands: [{ container: 'db', image: 'localhost/db:1', argv: ['/usr/bin/db'] }] } });
    const pod = stsPod('db-0');
    pod.spec!.containers[0]!.image = 'localhost/db:2';
    const d = decideRestore(pod, c, cfg, { now: '2026-12-04T10:01:00Z', namespace: 'prod', matched: true });
    expect(d.allowed).toBe(true);
    expect(d.patch).toBeUndefined();
    expect(d.notRestored).toMatch(/no explicit command/);
  });
  it('hands over through the reported per-node vault socket when the vault holds the descriptions, still unpinned in Auto mode', () => {
    const c = ck('move', 'SameName', { phase: 'HandoverReady', agent: { state: 'HandoverReady', handoverSocket: '/run/lockmig/node-a/vault.sock', commands: [{ container: 'db', image: 'localhost/db:1', argv: ['/db'] }] } });
    const out = applyJsonPatch(stsPod(), decideRestore(stsPod(), c, cfg, { now: 'x', namespace: 'prod', matched: true }).patch!);
    const cmd = out.spec!.containers[0]!.command!;
    // the vault of the node the pod lands on (kubelet expands $(LOCKMIG_NODE_NAME) from the downward API)
    expect(cmd.slice(cmd.indexOf('--handover'), cmd.indexOf('--handover') + 4)).toEqual(['--handover', '/lockmig/vault/$(LOCKMIG_NODE_NAME)/vault.sock', '--checkpoint', 'prod/move.db']);
    expect(out.spec!.containers[0]!.env).toContainEqual({ name: 'LOCKMIG_NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(out.spec!.affinity).toBeUndefined();
    // mode Handover insists on the same node: pinned
    const pinned = ck('move', 'SameName', { phase: 'HandoverReady', spec: { restore: { mode: 'Handover' } }, agent: { state: 'HandoverReady', commands: [{ container: 'db', image: 'localhost/db:1', argv: ['/db'] }] } });
    const out2 = applyJsonPatch(stsPod(), decideRestore(stsPod(), pinned, cfg, { now: 'x', namespace: 'prod', matched: true }).patch!);
    expect(out2.spec!.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms[0]?.matchFields).toEqual([{ key: 'metadata.name', operator: 'In', values: ['node-a'] }]);
  });
  it('a node-local fallback is mounted from where the agent reported it, pinned to that node; a reported path outside the root is ignored', () => {
    const c = ck('big', 'SameName', { agent: { storage: 'nodeLocal', configMaps: undefined, imageLocation: '/var/lib/lockmig/checkpoints/node-a/prod/big', commands: [{ container: 'db', image: 'localhost/db:1', argv: ['/db'] }] } });
    const out = applyJsonPatch(stsPod(), decideRestore(stsPod(), c, cfg, { now: 'x', namespace: 'prod', matched: true }).patch!);
    expect(out.spec!.volumes).toContainEqual({ name: 'lockmig-images', hostPath: { path: '/var/lib/lockmig/checkpoints/node-a/prod/big', type: 'Directory' } });
    expect(out.spec!.affinity).toBeDefined();
    const evil = ck('big', 'SameName', { agent: { storage: 'nodeLocal', imageLocation: '/etc/../var/lib/lockmig/checkpoints/x', commands: [{ container: 'db', image: 'localhost/db:1', argv: ['/db'] }] } });
    const out3 = applyJsonPatch(stsPod(), decideRestore(stsPod(), evil, cfg, { now: 'x', namespace: 'prod', matched: true }).patch!);
    expect(out3.spec!.volumes).toContainEqual({ name: 'lockmig-images', hostPath: { path: '/var/lib/lockmig/checkpoints/prod/big', type: 'Directory' } });
  });
});

describe('stop hooks (eviction, deletion)', () => {
  const running = (labels: Record<string, string> = { 'lockmig.dev/migrate': 'always' }): V1Pod => ({
    metadata: { ...stsPod().metadata, uid: SRC_UID, labels },
    spec: { ...stsPod().spec!, nodeName: 'node-a' },
    status: { phase: 'Running' },
  });
  it('opt-in by the pod\'s label or its namespace\'s; on-eviction skips deletions', () => {
    expect(migratePolicy(running())).toBe('always');
    expect(migratePolicy(running({}), { 'lockmig.dev/migrate': 'on-eviction' })).toBe('on-eviction');
    expect(migratePolicy(running({ 'lockmig.dev/migrate': 'sometimes' }))).toBeUndefined();
    expect(wantsCheckpoint(running(), 'delete', 'always')).toEqual({ yes: true });
    expect(wantsCheckpoint(running(), 'delete', 'on-eviction')).toMatchObject({ yes: false });
    expect(wantsCheckpoint(running(), 'eviction', 'on-eviction')).toEqual({ yes: true });
    expect(wantsCheckpoint({ ...running(), status: { phase: 'Pending' } }, 'eviction', 'always')).toMatchObject({ yes: false });
    expect(wantsCheckpoint({ ...running(), metadata: { ...running().metadata, deletionTimestamp: new Date() } }, 'delete', 'always')).toMatchObject({ yes: false });
  });
  it('one checkpoint per pod incarnation: Workload target for a controlled pod, SameName for a bare one, a TTL', () => {
    expect(stopCheckpointName(running())).toBe('db-0-11111111');
    const body = stopCheckpoint(running(), 'eviction') as { metadata: { labels: Record<string, string> }; spec: Record<string, unknown> };
    expect(body.metadata.labels['lockmig.dev/trigger']).toBe('eviction');
    expect(body.spec).toMatchObject({ sourcePodName: 'db-0', sourcePodUID: SRC_UID, target: { policy: 'Workload' }, ttlSecondsAfterFinished: 86400 });
    const bare = running();
    delete bare.metadata!.ownerReferences;
    expect((stopCheckpoint(bare, 'delete') as { spec: { target: unknown } }).spec.target).toEqual({ policy: 'SameName' });
    expect(stopCheckpointName({ metadata: { name: 'x'.repeat(300), uid: SRC_UID } }).length).toBeLessThanOrEqual(253);
  });
  it('says what was recorded, or that the pod stops without its locks', () => {
    expect(stopProgress(undefined)).toBeUndefined();
    expect(stopProgress(ck('a', 'Workload', { phase: 'Dumping' }))).toBeUndefined();
    const ready = stopProgress(ck('a', 'Workload', { phase: 'HandoverReady' }))!;
    expect(stopMessage('prod/db-0', 'eviction', ready, 800)).toMatchObject({ ok: true, warning: expect.stringMatching(/recorded in LockCheckpoint prod\/a before its eviction; its OFD\/flock descriptions are held/) });
    expect(stopMessage('prod/db-0', 'delete', { state: 'timeout' }, 10_000)).toMatchObject({ ok: false, warning: expect.stringMatching(/proceeds WITHOUT its locks recorded \(the checkpoint was not ready within 10 s\)/) });
  });
});
