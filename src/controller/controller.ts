/**
 * The LockCheckpoint controller: informers on LockCheckpoints and Pods feed a per-key work queue;
 * each key is reconciled one at a time by the pure `reconcile` and applied by the thin writer.
 * Informers run on every replica (warm caches, readiness); workers run only while this replica
 * leads (when leader election is on), and every write is fenced by the leadership signal.
 */
import type { KubernetesObject, V1Pod } from '@kubernetes/client-node';
import { API_VERSION, KIND } from '../api/lockcheckpoint.js';
import type { Clock } from '../kube/clock.js';
import type { EventRecorder } from '../kube/events.js';
import type { ResilientInformer } from '../kube/informer.js';
import { WorkQueue, runWorkers } from '../kube/workqueue.js';
import { isConflict, isNotFound } from '../kube/errors.js';
import type { Logger } from '../log/logger.js';
import type { ControllerMetrics } from './metrics.js';
import { DEFAULT_CONFIG, reconcile, type NodeView, type RawCheckpoint, type ReconcileConfig } from './reconcile.js';
import { applyResult, FencedError, type CheckpointApi } from './writer.js';

export type CheckpointObject = KubernetesObject & RawCheckpoint;

export interface ControllerDeps {
  readonly checkpoints: ResilientInformer<CheckpointObject>;
  readonly pods: ResilientInformer<V1Pod>;
  readonly api: CheckpointApi;
  readonly recorder: EventRecorder;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: ControllerMetrics;
  readonly config?: ReconcileConfig;
  readonly workers?: number;
  /**
   * Does Node `name` exist (a kubelet checkpoint source names one)? false only for NotFound; other
   * errors throw. Absent: not checked (the agent's answer, or AgentUnavailable, tells).
   */
  readonly nodeExists?: (name: string) => Promise<boolean>;
}

const keyOf = (ns: string | undefined, name: string | undefined) => `${ns ?? ''}/${name ?? ''}`;

export class Controller {
  private readonly d: ControllerDeps;
  private readonly config: ReconcileConfig;
  private queue: WorkQueue | undefined;
  private fence: AbortSignal | undefined;

  constructor(deps: ControllerDeps) {
    this.d = deps;
    this.config = deps.config ?? DEFAULT_CONFIG;
    const enqueue = (o: CheckpointObject) => this.queue?.add(keyOf(o.metadata?.namespace, o.metadata?.name));
    deps.checkpoints.on('add', enqueue);
    deps.checkpoints.on('update', enqueue);
    deps.checkpoints.on('delete', (o) => deps.logger.debug('checkpoint deleted', { controller: 'lockcheckpoint', namespace: o.metadata?.namespace, name: o.metadata?.name }));
    const podChanged = (p: V1Pod) => {
      const ns = p.metadata?.namespace;
      for (const ck of deps.checkpoints.list(ns)) {
        const spec = ck.spec as { sourcePodName?: unknown } | undefined;
        const status = ck.status as { restoredPod?: { name?: unknown } } | undefined;
        if (spec?.sourcePodName === p.metadata?.name || status?.restoredPod?.name === p.metadata?.name) enqueue(ck);
      }
    };
    deps.pods.on('add', podChanged);
    deps.pods.on('update', podChanged);
    deps.pods.on('delete', podChanged);
  }

  /** Starts both informers (does not wait for them). */
  async startInformers(): Promise<void> {
    await Promise.all([this.d.checkpoints.start(), this.d.pods.start()]);
  }

  async stopInformers(): Promise<void> {
    await Promise.all([this.d.checkpoints.stop(), this.d.pods.stop()]);
  }

  get synced(): boolean {
    return this.d.checkpoints.synced && this.d.pods.synced;
  }

  /**
   * Runs the workers until `signal` aborts (shutdown or lost leadership). Waits for the caches
   * first, then enqueues every known checkpoint: a new leader (or a restarted controller)
   * re-examines everything and resumes from status.
   */
  async run(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    const queue = new WorkQueue({ clock: this.d.clock, baseDelayMs: 200, maxDelayMs: 60_000 });
    this.queue = queue;
    this.fence = signal;
    const stop = () => queue.shutDown();
    signal.addEventListener('abort', stop, { once: true });
    await Promise.all([this.d.checkpoints.waitForSync(), this.d.pods.waitForSync()]);
    for (const ck of this.d.checkpoints.list()) queue.add(keyOf(ck.metadata?.namespace, ck.metadata?.name));
    this.d.logger.info('controller workers started', { controller: 'lockcheckpoint', checkpoints: this.d.checkpoints.list().length });
    try {
      await runWorkers(queue, this.d.workers ?? 2, (key) => this.reconcileKey(key, signal), (key, err, retry) => {
        const [namespace, name] = key.split('/');
        const conflict = isConflict(err);
        this.d.logger[conflict || err instanceof FencedError ? 'info' : 'error']('reconcile failed; will retry', {
          controller: 'lockcheckpoint', namespace, name, error: (err as Error).message, retryInMs: retry,
        });
      });
    } finally {
      signal.removeEventListener('abort', stop);
      if (this.queue === queue) this.queue = undefined;
      this.d.logger.info('controller workers stopped', { controller: 'lockcheckpoint' });
    }
  }

  /**
   * The node a kubelet checkpoint source names, while the checkpoint is not dispatched yet (one GET;
   * the controller watches no nodes). A failed look-up is logged and left to the agent's answer.
   */
  private async sourceNode(ck: CheckpointObject, log: Record<string, unknown>): Promise<NodeView | undefined> {
    const node = (ck.spec as { source?: { kubeletCheckpoint?: { node?: unknown } } } | undefined)?.source?.kubeletCheckpoint?.node;
    const st = ck.status as { nodeName?: unknown; phase?: unknown } | undefined;
    // only while it may still be dispatched: not once it was, nor for a failed or deleting one
    if (typeof node !== 'string' || node === '' || st?.nodeName || st?.phase === 'Failed' || ck.metadata?.deletionTimestamp || !this.d.nodeExists) return undefined;
    try {
      return { exists: await this.d.nodeExists(node) };
    } catch (err) {
      this.d.logger.warn('cannot look up the node of a kubelet checkpoint source; dispatching to it anyway', { ...log, node, error: (err as Error).message });
      return undefined;
    }
  }

  /** One reconcile pass for `namespace/name`. Exposed for tests. */
  async reconcileKey(key: string, fence?: AbortSignal): Promise<{ requeueAfterMs?: number }> {
    const [namespace, name] = key.split('/') as [string, string];
    const ck = this.d.checkpoints.get(name, namespace);
    if (!ck) return {};
    const log = { controller: 'lockcheckpoint', namespace, name };
    const started = this.d.clock.now();
    const endTimer = this.d.metrics.reconcileDuration.startTimer();
    const spec = ck.spec as { sourcePodName?: unknown } | undefined;
    const pod = typeof spec?.sourcePodName === 'string' ? this.d.pods.get(spec.sourcePodName, namespace) : undefined;
    const rpName = (ck.status as { restoredPod?: { name?: unknown } } | undefined)?.restoredPod?.name;
    const restorePod = typeof rpName === 'string' ? this.d.pods.get(rpName, namespace) : undefined;
    const sourceNode = await this.sourceNode(ck, log);
    const r = reconcile(ck, pod, new Date(started), this.config, restorePod, sourceNode);
    let result = 'ok';
    try {
      const out = await applyResult(this.d.api, ck, r, fence ?? this.fence);
      const involved = { apiVersion: API_VERSION, kind: KIND, name, namespace, ...(ck.metadata?.uid ? { uid: ck.metadata.uid } : {}) };
      for (const e of r.events) void this.d.recorder.record(involved, e.type, e.reason, e.message);
      if (r.transition) {
        this.d.metrics.transitions.inc({ reason: r.transition.to });
        if (r.transition.phase === 'Failed') this.d.metrics.failures.inc({ reason: r.transition.to });
        this.d.logger.info('transition', { ...log, phase: r.transition.phase, reason: r.transition.to, from: r.transition.from, detail: r.status.message });
      }
      if (r.locksMoved) {
        for (const kind of ['posix', 'flock', 'ofd', 'lease'] as const) {
          const n = r.locksMoved[kind];
          if (n) this.d.metrics.locksMoved.inc({ kind: kind.toUpperCase() }, n);
        }
      }
      if (out.wroteMetadata || out.wroteStatus || out.deleted) {
        this.d.logger.debug('applied', { ...log, ...out, statusFields: Object.keys(r.statusPatch ?? {}) });
      }
      return out.deleted ? {} : { ...(r.requeueAfterMs !== undefined ? { requeueAfterMs: r.requeueAfterMs } : {}) };
    } catch (err) {
      result = isConflict(err) ? 'conflict' : 'error';
      if (isNotFound(err)) {
        result = 'ok';
        return {};
      }
      throw err;
    } finally {
      this.d.metrics.reconciles.inc({ result });
      endTimer({ result });
      this.d.metrics.queueDepth.set(this.queue?.length ?? 0);
    }
  }
}
