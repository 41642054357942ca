/**
 * The thin writer: applies a ReconcileResult to the API server. It holds no decisions.
 *   - metadata (label, finalizer): JSON merge patch on the object, carrying
 *     metadata.resourceVersion, so a concurrent change answers 409 and we retry on fresh data;
 *     the finalizer list is computed from the object we reconciled (merge patch replaces lists);
 *   - status: JSON merge patch on the status subresource, also carrying resourceVersion: a
 *     decision made on a stale object (say AgentUnavailable while the agent's Dumped report was
 *     already stored) must not overwrite the newer state;
 *   - order: metadata first, then status. The agent acts on `status.phase: Dumping` on objects it
 *     sees through its label selector, so when the status says Dumping the label is already there;
 *   - before every write the fencing signal (leadership) is checked.
 */
import { CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import { FINALIZER_IMAGES, GROUP, PLURAL, VERSION } from '../api/lockcheckpoint.js';
import type { RawCheckpoint, ReconcileResult } from './reconcile.js';
import { isNotFound } from '../kube/errors.js';

export interface CheckpointApi {
  patchMetadata(namespace: string, name: string, metadata: Record<string, unknown>): Promise<RawCheckpoint>;
  patchStatus(namespace: string, name: string, resourceVersion: string | undefined, status: Record<string, unknown>): Promise<RawCheckpoint>;
  delete(namespace: string, name: string, uid: string | undefined): Promise<void>;
}

export class FencedError extends Error {
  constructor() {
    super('not the leader anymore: write skipped');
    this.name = 'FencedError';
  }
}

export interface ApplyOutcome {
  readonly wroteMetadata: boolean;
  readonly wroteStatus: boolean;
  readonly deleted: boolean;
}

export async function applyResult(api: CheckpointApi, ck: RawCheckpoint, r: ReconcileResult, fence?: AbortSignal): Promise<ApplyOutcome> {
  const ns = ck.metadata?.namespace ?? '';
  const name = ck.metadata?.name ?? '';
  let rv = ck.metadata?.resourceVersion;
  const check = () => {
    if (fence?.aborted) throw new FencedError();
  };
  let wroteMetadata = false;
  let wroteStatus = false;
  if (r.labels || r.finalizer) {
    check();
    const cur = ck.metadata?.finalizers ?? [];
    const md: Record<string, unknown> = { ...(rv ? { resourceVersion: rv } : {}) };
    if (r.labels) md.labels = r.labels;
    if (r.finalizer === 'add' && !cur.includes(FINALIZER_IMAGES)) md.finalizers = [...cur, FINALIZER_IMAGES];
    if (r.finalizer === 'remove' && cur.includes(FINALIZER_IMAGES)) md.finalizers = cur.filter((f) => f !== FINALIZER_IMAGES);
    if (Object.keys(md).some((k) => k !== 'resourceVersion')) {
      try {
        const updated = await api.patchMetadata(ns, name, md);
        rv = updated.metadata?.resourceVersion ?? rv;
        wroteMetadata = true;
      } catch (err) {
        // removing the last finalizer of a deleting object makes it vanish: that is success
        if (!(r.finalizer === 'remove' && isNotFound(err))) throw err;
        return { wroteMetadata: true, wroteStatus: false, deleted: true };
      }
    }
  }
  if (r.statusPatch && !(r.finalizer === 'remove')) {
    check();
    await api.patchStatus(ns, name, rv, r.statusPatch as Record<string, unknown>);
    wroteStatus = true;
  }
  if (r.delete) {
    check();
    try {
      await api.delete(ns, name, ck.metadata?.uid);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    return { wroteMetadata, wroteStatus, deleted: true };
  }
  return { wroteMetadata, wroteStatus, deleted: false };
}

/** CheckpointApi over the real API (CustomObjectsApi). */
export function kubeCheckpointApi(kc: KubeConfig): CheckpointApi {
  const api = kc.makeApiClient(CustomObjectsApi);
  const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
  const base = { group: GROUP, version: VERSION, plural: PLURAL };
  return {
    async patchMetadata(namespace, name, metadata) {
      return (await api.patchNamespacedCustomObject({ ...base, namespace, name, body: { metadata } }, merge)) as RawCheckpoint;
    },
    async patchStatus(namespace, name, resourceVersion, status) {
      const body = { ...(resourceVersion ? { metadata: { resourceVersion } } : {}), status };
      return (await api.patchNamespacedCustomObjectStatus({ ...base, namespace, name, body }, merge)) as RawCheckpoint;
    },
    async delete(namespace, name, uid) {
      await api.deleteNamespacedCustomObject({
        ...base, namespace, name, propagationPolicy: 'Background',
        body: { apiVersion: 'v1', kind: 'DeleteOptions', ...(uid ? { preconditions: { uid } } : {}) },
      });
    },
  };
}
