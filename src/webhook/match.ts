/**
 * Pure: which LockCheckpoint, if any, a new pod restores from by its checkpoint's target policy
 * (spec.target.policy), when the pod itself names none:
 *  - SameName: the pod has the source pod's name (a StatefulSet recreates `db-0` with a new UID);
 *  - Workload: the pod is created by the source pod's controller — the same StatefulSet (by
 *    UID), or a ReplicaSet of the same Deployment (`<deployment>-<hash>`, any hash: a rollout
 *    makes a new one) or the same ReplicaSet — and carries the source's labels (without the
 *    per-revision ones).
 * Only checkpoints that can be restored from now (Dumped or HandoverReady), are not claimed by
 * another pod and are not being deleted are candidates; among several, the oldest wins (the
 * first replacement gets the first checkpoint). Every other pod is left alone, with no API call
 * (the caller's cache is read).
 */
import type { V1Pod } from '@kubernetes/client-node';
import { effectiveSpec, validateSpec, type LockCheckpoint } from '../api/index.js';

function created(c: LockCheckpoint): number {
  const t = Date.parse(c.metadata.creationTimestamp ?? '');
  return Number.isNaN(t) ? 0 : t;
}

/** Does `pod` come from the source's workload (status.source), by owner and labels? */
export function sameWorkload(pod: V1Pod, source: NonNullable<LockCheckpoint['status']>['source']): boolean {
  const w = source?.workload;
  if (!w) return false;
  const owner = (pod.metadata?.ownerReferences ?? []).find((o) => o.controller);
  if (!owner) return false;
  let ownerOk: boolean;
  if (w.kind === 'Deployment') ownerOk = owner.kind === 'ReplicaSet' && owner.name.startsWith(`${w.name}-`);
  else ownerOk = owner.kind === w.kind && owner.name === w.name && (!w.uid || owner.uid === w.uid);
  if (!ownerOk) return false;
  const labels = pod.metadata?.labels ?? {};
  return Object.entries(source?.labels ?? {}).every(([k, v]) => labels[k] === v);
}

export function matchCheckpoint(pod: V1Pod, checkpoints: readonly LockCheckpoint[]): LockCheckpoint | undefined {
  return matchCandidates(pod, checkpoints)[0];
}

/**
 * Every checkpoint whose policy picks `pod`, oldest first. With `includeClaimed`, also those
 * claimed by a restore pod that has not reported its locks held: the caller looks whether that
 * pod is gone (its claim lapsed, api/claim.ts) before it takes one.
 */
export function matchCandidates(pod: V1Pod, checkpoints: readonly LockCheckpoint[], opts: { includeClaimed?: boolean } = {}): LockCheckpoint[] {
  const name = pod.metadata?.name ?? '';
  const ns = pod.metadata?.namespace;
  const candidates: LockCheckpoint[] = [];
  for (const c of checkpoints) {
    if (ns && c.metadata.namespace !== ns) continue;
    if (c.metadata.deletionTimestamp) continue;
    if (validateSpec(c.spec).length > 0) continue;
    const policy = effectiveSpec(c.spec, c.metadata.name).target.policy;
    if (policy === 'Annotated') continue;
    const st = c.status;
    // claimed already (a re-invocation of the claiming pod's admission carries the annotation
    // and is decided by name; a pod without it is a new pod, even under the same name)
    const claimed = st?.restoredPod?.name !== undefined;
    if (claimed && !opts.includeClaimed) continue;
    if (claimed ? st?.phase !== 'Restoring' : st?.phase !== 'Dumped' && st?.phase !== 'HandoverReady') continue;
    const src = st?.source;
    if (!src) continue;
    // never the source pod itself (an update of the same object is no CREATE, but be explicit)
    if (pod.metadata?.uid && pod.metadata.uid === src.podUID) continue;
    const ok = policy === 'SameName' ? name !== '' && name === src.podName : sameWorkload(pod, src);
    if (ok) candidates.push(c);
  }
  candidates.sort((a, b) => created(a) - created(b) || a.metadata.name.localeCompare(b.metadata.name));
  return candidates;
}
