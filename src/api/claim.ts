/**
 * Pure: is a checkpoint's claim (status.restoredPod) stale, so another pod may restore from it?
 *
 * A checkpoint restores into one pod. But a restore pod can vanish before its shim holds the
 * locks — deleted by a user, evicted, its node gone, its StatefulSet/ReplicaSet replacing it —
 * and then the images (and any descriptions the vault still holds) would be stranded: the source
 * is gone, nothing else can restore them. So a claim lapses when the claimed pod is known to be
 * gone and never reported its locks held:
 *  - its UID is recorded and the pod of that name is absent, has another UID, or is terminating;
 *  - its UID was never recorded (the API server did not create it: a later admission step
 *    refused it) and `unrecordedGraceMs` passed since the admission.
 * A restore pod that held the locks keeps its claim: the locks left with it, and only a new
 * checkpoint (of that pod) can move them again.
 */
import type { LockCheckpointStatus } from './lockcheckpoint.js';

export interface ClaimedPodView {
  readonly metadata?: { readonly uid?: string; readonly deletionTimestamp?: unknown; readonly name?: string };
}

/** the reason a claim lapsed (for events and logs), or undefined while it stands */
export function staleClaim(
  status: LockCheckpointStatus | undefined, pod: ClaimedPodView | null | undefined, now: number, unrecordedGraceMs = 120_000,
): string | undefined {
  const rp = status?.restoredPod;
  if (!rp?.name) return undefined;
  const rr = status?.restore;
  if (rr?.state === 'Held' && rr.podName === rp.name && (!rr.podUID || !rp.uid || rr.podUID === rp.uid)) return undefined;
  const uid = pod?.metadata?.uid;
  if (rp.uid) {
    if (!pod) return `restore pod ${rp.name} (uid ${rp.uid}) was deleted before it held the locks`;
    if (uid && uid !== rp.uid) return `restore pod ${rp.name} (uid ${rp.uid}) was replaced by another pod of that name (uid ${uid}) before it held the locks`;
    if (pod.metadata?.deletionTimestamp) return `restore pod ${rp.name} (uid ${rp.uid}) is terminating and never held the locks`;
    return undefined;
  }
  if (pod) return undefined; // exists (its UID is recorded in a moment) or is the source still terminating
  const t = Date.parse(rp.time ?? '');
  if (Number.isNaN(t) || now - t < unrecordedGraceMs) return undefined;
  return `restore pod ${rp.name} was admitted at ${rp.time} but never created (another admission step refused it?)`;
}
