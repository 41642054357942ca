/**
 * Kubernetes Events (core/v1) so `kubectl describe lockcheckpoint X` shows every transition.
 * Like client-go's recorder, repeats of the same (object, type, reason, message) within
 * `aggregateWindowMs` bump `count` and `lastTimestamp` of the existing Event instead of creating
 * a new one. Recording is best effort: failures are logged, never thrown into the caller.
 */
import { CoreV1Api, PatchStrategy, setHeaderOptions, type CoreV1Event, type KubeConfig } from '@kubernetes/client-node';
import type { Clock } from './clock.js';
import type { Logger } from '../log/logger.js';

export interface InvolvedObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly name: string;
  readonly namespace: string;
  readonly uid?: string;
  readonly resourceVersion?: string;
}

export interface EventSink {
  create(namespace: string, ev: CoreV1Event): Promise<void>;
  patch(namespace: string, name: string, body: Record<string, unknown>): Promise<void>;
}

export interface RecorderOptions {
  readonly sink: EventSink;
  readonly clock: Clock;
  readonly logger: Logger;
  /** `source.component` / `reportingComponent`, e.g. lockmig-controller */
  readonly component: string;
  /** `source.host` / `reportingInstance`, e.g. the pod name */
  readonly instance?: string;
  readonly aggregateWindowMs?: number;
  readonly maxCached?: number;
}

export class EventRecorder {
  private readonly o: RecorderOptions;
  private readonly seen = new Map<string, { name: string; namespace: string; count: number; first: number; last: number }>();
  private seq = 0;

  constructor(opts: RecorderOptions) {
    this.o = opts;
  }

  /** Records an event; resolves when it was written (or failed and was logged). */
  async record(obj: InvolvedObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = this.o.clock.now();
    const key = `${obj.namespace}/${obj.name}/${obj.uid ?? ''}\u0000${type}\u0000${reason}\u0000${message}`;
    const window = this.o.aggregateWindowMs ?? 10 * 60_000;
    const prev = this.seen.get(key);
    try {
      if (prev && now - prev.last < window) {
        prev.count++;
        prev.last = now;
        await this.o.sink.patch(prev.namespace, prev.name, { count: prev.count, lastTimestamp: new Date(now).toISOString() });
        return;
      }
      // name like client-go: <object>.<hex nanoseconds>, made unique within this process
      const name = `${obj.name}.${(BigInt(now) * 1_000_000n + BigInt(this.seq++ % 1_000_000)).toString(16)}`;
      const ev: CoreV1Event = {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { name, namespace: obj.namespace },
        involvedObject: { apiVersion: obj.apiVersion, kind: obj.kind, name: obj.name, namespace: obj.namespace, ...(obj.uid ? { uid: obj.uid } : {}), ...(obj.resourceVersion ? { resourceVersion: obj.resourceVersion } : {}) },
        reason,
        message: message.length > 1024 ? `${message.slice(0, 1021)}...` : message,
        type,
        count: 1,
        firstTimestamp: new Date(now),
        lastTimestamp: new Date(now),
        source: { component: this.o.component, ...(this.o.instance ? { host: this.o.instance } : {}) },
        reportingComponent: this.o.component,
        reportingInstance: this.o.instance ?? this.o.component,
      };
      await this.o.sink.create(obj.namespace, ev);
      this.seen.delete(key);
      this.seen.set(key, { name, namespace: obj.namespace, count: 1, first: now, last: now });
      while (this.seen.size > (this.o.maxCached ?? 4096)) this.seen.delete(this.seen.keys().next().value as string);
    } catch (err) {
      if (prev) this.seen.delete(key); // the aggregated Event may be gone: start a new one next time
      this.o.logger.warn('could not record event', { namespace: obj.namespace, name: obj.name, reason, error: (err as Error).message });
    }
  }
}

/** An EventSink over the real API. */
export function kubeEventSink(kc: KubeConfig): EventSink {
  const api = kc.makeApiClient(CoreV1Api);
  return {
    async create(namespace, ev) {
      await api.createNamespacedEvent({ namespace, body: ev });
    },
    async patch(namespace, name, body) {
      await api.patchNamespacedEvent({ namespace, name, body }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    },
  };
}
