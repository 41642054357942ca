/**
 * A compile-checked inventory of every field of the LockCheckpoint TypeScript types.
 * Each table is a `Record<keyof T, true>`: tsc rejects a missing or an extra key, so adding a
 * field to a type without adding it here breaks the build. test/api/crd.test.ts compares these
 * tables with the CRD's openAPIV3Schema in both directions, so the YAML and the types cannot drift.
 */
import type {
  AgentReport, ApiStorage, CheckpointSource, KubeletCheckpointSource, ClockReading, ImageConfigMap, SourceInfo, TargetSpec, Condition, Durations, LockCheckpointSpec, LockCheckpointStatus, LockCounts, NodeLocalStorage,
  PersistentVolumeClaimStorage, RestoredPod, RestoreReport, RestoreSpec, Storage,
} from './lockcheckpoint.js';

type Keys<T> = Readonly<Record<keyof T, true>>;

const spec: Keys<LockCheckpointSpec> = {
  sourcePodName: true, source: true, sourcePodUID: true, containers: true, lockKinds: true, storage: true, restore: true, target: true, ttlSecondsAfterFinished: true,
};
const source: Keys<CheckpointSource> = { kubeletCheckpoint: true };
const kubeletCheckpoint: Keys<KubeletCheckpointSource> = { node: true, file: true };
const storage: Keys<Storage> = { api: true, nodeLocal: true, persistentVolumeClaim: true };
const apiStorage: Keys<ApiStorage> = { fallback: true };
const target: Keys<TargetSpec> = { policy: true };
const nodeLocal: Keys<NodeLocalStorage> = { path: true };
const pvc: Keys<PersistentVolumeClaimStorage> = { claimName: true, subPath: true };
const restore: Keys<RestoreSpec> = { mode: true, timeoutSeconds: true, holdSeconds: true };
const status: Keys<LockCheckpointStatus> = {
  observedGeneration: true, conditions: true, phase: true, nodeName: true, sourcePodUID: true, imageLocation: true, locks: true,
  files: true, skippedFds: true, restoredPod: true, startTime: true, dispatchTime: true, completionTime: true, durations: true,
  agent: true, message: true, restore: true, source: true,
};
const sourceInfo: Keys<SourceInfo> = { podName: true, podUID: true, workload: true, labels: true };
const imageConfigMap: Keys<ImageConfigMap> = { name: true, items: true };
const condition: Keys<Condition> = { type: true, status: true, observedGeneration: true, lastTransitionTime: true, reason: true, message: true };
const locks: Keys<LockCounts> = { posix: true, flock: true, ofd: true, lease: true, total: true };
const restoredPod: Keys<RestoredPod> = { name: true, uid: true, nodeName: true, time: true };
const durations: Keys<Durations> = { dumpMilliseconds: true, totalMilliseconds: true };
const agent: Keys<AgentReport> = {
  nodeName: true, podUID: true, state: true, observedGeneration: true, heartbeatTime: true, startTime: true, completionTime: true,
  dumpMilliseconds: true, imageLocation: true, locks: true, files: true, skippedFds: true, handoverSocket: true, reason: true,
  message: true, imagesDeleted: true, sourceExit: true, storage: true, configMaps: true, commands: true, handoverLostTime: true, containers: true,
};
const clock: Keys<ClockReading> = { time: true, bootID: true, monotonicNs: true };
const restoreReport: Keys<RestoreReport> = {
  podName: true, podUID: true, nodeName: true, state: true, heldTime: true, locks: true, handedOver: true, notRestored: true,
  windowMilliseconds: true, reason: true, message: true,
};

/** Object paths (dot-separated, `[]` for list items) → the field names the TS type declares there. */
export const TYPE_FIELDS: Readonly<Record<string, readonly string[]>> = {
  spec: Object.keys(spec),
  'spec.source': Object.keys(source),
  'spec.source.kubeletCheckpoint': Object.keys(kubeletCheckpoint),
  'spec.storage': Object.keys(storage),
  'spec.storage.nodeLocal': Object.keys(nodeLocal),
  'spec.storage.persistentVolumeClaim': Object.keys(pvc),
  'spec.restore': Object.keys(restore),
  'spec.storage.api': Object.keys(apiStorage),
  'spec.target': Object.keys(target),
  status: Object.keys(status),
  'status.conditions[]': Object.keys(condition),
  'status.locks': Object.keys(locks),
  'status.restoredPod': Object.keys(restoredPod),
  'status.durations': Object.keys(durations),
  'status.agent': Object.keys(agent),
  'status.agent.locks': Object.keys(locks),
  'status.agent.sourceExit': Object.keys(clock),
  'status.restore': Object.keys(restoreReport),
  'status.restore.locks': Object.keys(locks),
  'status.source': Object.keys(sourceInfo),
  'status.source.workload': ['kind', 'name', 'uid'],
  'status.agent.configMaps[]': Object.keys(imageConfigMap),
  'status.agent.configMaps[].items[]': ['key', 'path'],
  'status.agent.commands[]': ['container', 'image', 'argv'],
};
