/**
 * Checkpoints taken when a pod is stopped the way users stop pods — `kubectl drain` and the
 * Eviction API (pods/eviction CREATE), `kubectl delete pod`, `kubectl rollout restart` and every
 * controller scaling down (pods DELETE) — for pods that opt in with the label
 * `lockmig.dev/migrate` (or their namespace's label of that name):
 *   always       on eviction and on deletion
 *   on-eviction  on eviction only
 * A validating admission webhook runs before the API server acts on the request, so before the
 * kubelet sends SIGTERM: the checkpoint is created (target policy Workload, or SameName for a pod
 * without a controller), and the request waits — bounded — until the agent reported it Dumped or
 * HandoverReady (same node: the vault then holds the OFD/flock descriptions through the restart).
 * The request is ALWAYS allowed: a drain must never hang or fail because of lockmig. When the
 * checkpoint is not ready in time (or failed) the answer carries a warning and a Warning event
 * says what was not recorded. Registered with failurePolicy Ignore and a short timeout (charts/).
 * Not covered (no API request to intercept): kubelet node-pressure evictions and a node that dies.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { API_VERSION, KIND, type LockCheckpoint } from '../api/index.js';

export const LABEL_MIGRATE = 'lockmig.dev/migrate';
export const LABEL_TRIGGER = 'lockmig.dev/trigger';
export type MigratePolicy = 'always' | 'on-eviction';
export type StopKind = 'eviction' | 'delete';

/** Automatic checkpoints expire a day after they finished (or after their restore). */
export const STOP_TTL_SECONDS = 86_400;

export function migratePolicy(pod: V1Pod, namespaceLabels: Readonly<Record<string, string>> = {}): MigratePolicy | undefined {
  const v = pod.metadata?.labels?.[LABEL_MIGRATE] ?? namespaceLabels[LABEL_MIGRATE];
  return v === 'always' || v === 'on-eviction' ? v : undefined;
}

/** Does this stop of this pod get a checkpoint? (pure) */
export function wantsCheckpoint(pod: V1Pod, kind: StopKind, policy: MigratePolicy | undefined): { yes: true } | { yes: false; why: string } {
  if (!policy) return { yes: false, why: `no ${LABEL_MIGRATE} label on the pod or its namespace` };
  if (kind === 'delete' && policy === 'on-eviction') return { yes: false, why: `${LABEL_MIGRATE}=on-eviction: deletions are not checkpointed` };
  if (pod.metadata?.deletionTimestamp) return { yes: false, why: 'the pod is already terminating' };
  if (pod.status?.phase !== 'Running') return { yes: false, why: `the pod is ${pod.status?.phase ?? 'not running'}: its processes hold no locks` };
  if (!pod.spec?.nodeName) return { yes: false, why: 'the pod is not scheduled' };
  return { yes: true };
}

/** `<pod>-<first 8 hex of its UID>`: one checkpoint per pod incarnation, whichever hook comes first. */
export function stopCheckpointName(pod: V1Pod): string {
  const uid = (pod.metadata?.uid ?? '').replace(/-/g, '').slice(0, 8);
  const head = (pod.metadata?.name ?? 'pod').slice(0, 253 - uid.length - 1).replace(/[-.]+$/, '');
  return `${head}-${uid}`;
}

/** The LockCheckpoint a stop creates. */
export function stopCheckpoint(pod: V1Pod, kind: StopKind): object {
  const owned = (pod.metadata?.ownerReferences ?? []).some((o) => o.controller);
  return {
    apiVersion: API_VERSION, kind: KIND,
    metadata: {
      name: stopCheckpointName(pod), namespace: pod.metadata?.namespace,
      labels: { [LABEL_TRIGGER]: kind, 'app.kubernetes.io/managed-by': 'lockmig' },
      annotations: { 'lockmig.dev/source-pod': `${pod.metadata?.name}` },
    },
    spec: {
      sourcePodName: pod.metadata?.name,
      ...(pod.metadata?.uid ? { sourcePodUID: pod.metadata.uid } : {}),
      target: { policy: owned ? 'Workload' : 'SameName' },
      ttlSecondsAfterFinished: STOP_TTL_SECONDS,
    },
  };
}

export type StopOutcome =
  | { readonly state: 'ready'; readonly checkpoint: LockCheckpoint }
  | { readonly state: 'failed'; readonly checkpoint: LockCheckpoint }
  | { readonly state: 'timeout'; readonly checkpoint?: LockCheckpoint };

/** Where a checkpoint stands for a waiting stop request. */
export function stopProgress(cp: LockCheckpoint | undefined): StopOutcome | undefined {
  const p = cp?.status?.phase;
  if (cp && (p === 'Dumped' || p === 'HandoverReady' || p === 'Restoring' || p === 'Restored')) return { state: 'ready', checkpoint: cp };
  if (cp && p === 'Failed') return { state: 'failed', checkpoint: cp };
  return undefined;
}

/** The warning the API server passes to the client (kubectl prints it), and the event message. */
export function stopMessage(podRef: string, kind: StopKind, o: StopOutcome, waitedMs: number): { warning: string; ok: boolean } {
  const name = o.checkpoint ? `${o.checkpoint.metadata.namespace}/${o.checkpoint.metadata.name}` : '(none)';
  if (o.state === 'ready') {
    const n = o.checkpoint.status?.locks?.total ?? 0;
    const how = o.checkpoint.status?.phase === 'HandoverReady' ? '; its OFD/flock descriptions are held by the agent until the replacement takes them' : '';
    return { ok: true, warning: `lockmig: the ${n} lock(s) of pod ${podRef} were recorded in LockCheckpoint ${name} before its ${kind}${how}` };
  }
  const why = o.state === 'failed' ? `the checkpoint failed: ${o.checkpoint.status?.message ?? 'no message'}` : `the checkpoint was not ready within ${Math.round(waitedMs / 1000)} s`;
  return { ok: false, warning: `lockmig: the ${kind} of pod ${podRef} proceeds WITHOUT its locks recorded (${why}); its replacement starts without them` };
}
