/**
 * The webhook's only API traffic: read a LockCheckpoint, and claim it for a restore pod by
 * writing status.restoredPod (JSON merge patch on the status subresource, carrying the
 * resourceVersion that was read, so two pods racing for one checkpoint cannot both win: the
 * loser gets 409 Conflict, re-reads, and is denied).
 */
import { CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION, parseLockCheckpoint, type LockCheckpoint, type RestoredPod } from '../api/index.js';

export class ConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConflictError';
  }
}

export interface CheckpointStore {
  /** undefined when it does not exist; throws on any other failure (including a malformed object) */
  get(namespace: string, name: string): Promise<LockCheckpoint | undefined>;
  /** sets status.restoredPod if the object is still at `resourceVersion`; ConflictError otherwise */
  claim(namespace: string, name: string, resourceVersion: string | undefined, restoredPod: RestoredPod): Promise<void>;
}

/** HTTP status of a client-node ApiException (or undefined for transport errors). */
export function httpCode(err: unknown): number | undefined {
  const c = (err as { code?: unknown }).code;
  return typeof c === 'number' ? c : undefined;
}

export function kubeCheckpointStore(kc: KubeConfig, fieldManager = 'lockmig-webhook'): CheckpointStore {
  const api = kc.makeApiClient(CustomObjectsApi);
  return {
    async get(namespace, name) {
      try {
        const raw: unknown = await api.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL, name });
        return parseLockCheckpoint(raw);
      } catch (err) {
        if (httpCode(err) === 404) return undefined;
        throw err;
      }
    },
    async claim(namespace, name, resourceVersion, restoredPod) {
      const body = { metadata: resourceVersion ? { resourceVersion } : {}, status: { restoredPod } };
      try {
        await api.patchNamespacedCustomObjectStatus(
          { group: GROUP, version: VERSION, namespace, plural: PLURAL, name, body, fieldManager },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        );
      } catch (err) {
        if (httpCode(err) === 409) throw new ConflictError(`LockCheckpoint ${namespace}/${name} changed while admitting the pod`);
        throw err;
      }
    },
  };
}
