/**
 * The webhook's only API traffic: read a LockCheckpoint, and claim it for a restore pod by
 * writing status.restoredPod (JSON merge patch on the status subresource, carrying the
 * resourceVersion that was read, so two pods racing for one checkpoint cannot both win: the
 * loser gets 409 Conflict, re-reads, and is denied).
 */
import {
  CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig, type KubernetesListObject, type KubernetesObject,
} from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION, parseLockCheckpoint, type LockCheckpoint, type RestoredPod } from '../api/index.js';
import { ResilientInformer } from '../kube/informer.js';
import type { Clock } from '../kube/clock.js';
import type { Logger } from '../log/logger.js';

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
  /**
   * The checkpoints of a namespace as an informer last saw them (no API call): the candidates for
   * a pod found by target policy. Absent when there is no cache (then no pod is matched).
   */
  list?(namespace: string): readonly LockCheckpoint[];
  /** creates a checkpoint; resolves false when one of that name exists already */
  create?(namespace: string, body: object): Promise<boolean>;
}

/**
 * A cache of every LockCheckpoint (list + watch, restarted on errors), parsed once per version;
 * malformed objects are skipped (the controller reports them).
 */
export class CheckpointCache {
  private readonly informer: ResilientInformer<KubernetesObject>;
  private readonly parsed = new Map<string, { rv: string | undefined; cp: LockCheckpoint | null }>();

  constructor(kc: KubeConfig, opts: { clock: Clock; logger: Logger }) {
    const api = kc.makeApiClient(CustomObjectsApi);
    this.informer = new ResilientInformer<KubernetesObject>({
      kubeConfig: kc, path: `/apis/${GROUP}/${VERSION}/${PLURAL}`, name: 'lockcheckpoints', clock: opts.clock, logger: opts.logger,
      list: async () => (await api.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })) as KubernetesListObject<KubernetesObject>,
    });
  }

  start(): Promise<void> { return this.informer.start(); }
  stop(): Promise<void> { return this.informer.stop(); }
  get synced(): boolean { return this.informer.synced; }

  list(namespace: string): LockCheckpoint[] {
    const out: LockCheckpoint[] = [];
    for (const o of this.informer.list(namespace)) {
      const key = `${o.metadata?.namespace}/${o.metadata?.name}`;
      let e = this.parsed.get(key);
      if (!e || e.rv !== o.metadata?.resourceVersion) {
        let cp: LockCheckpoint | null = null;
        try { cp = parseLockCheckpoint(o); } catch { cp = null; }
        e = { rv: o.metadata?.resourceVersion, cp };
        this.parsed.set(key, e);
      }
      if (e.cp) out.push(e.cp);
    }
    return out;
  }
}

/** HTTP status of a client-node ApiException (or undefined for transport errors). */
export function httpCode(err: unknown): number | undefined {
  const c = (err as { code?: unknown }).code;
  return typeof c === 'number' ? c : undefined;
}

export function kubeCheckpointStore(kc: KubeConfig, fieldManager = 'lockmig-webhook', cache?: CheckpointCache): CheckpointStore {
  const api = kc.makeApiClient(CustomObjectsApi);
  return {
    ...(cache ? { list: (ns: string) => cache.list(ns) } : {}),
    async create(namespace, body) {
      try {
        await api.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL, body, fieldManager });
        return true;
      } catch (err) {
        if (httpCode(err) === 409) return false;
        throw err;
      }
    },
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
      // a new claim replaces a lapsed one whole: no UID or restore report of the pod before it
      const body = { metadata: resourceVersion ? { resourceVersion } : {}, status: { restoredPod: { uid: null, nodeName: null, ...restoredPod }, restore: null } };
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
