/**
 * An informer that keeps running. client-node's ListWatch (cache.js) relists by itself only on
 * 410 Gone; on any other error (API server restart, connection refused, 5xx on list, a watch
 * request that fails) it fires its `error` callbacks and STOPS for good. A controller built on
 * it silently goes deaf. ResilientInformer wraps it:
 *   - on `error` it schedules a restart with exponential backoff (reset after a successful list);
 *   - a restart forces a full relist (the resourceVersion it held may be meaningless after the
 *     error, e.g. an etcd restore), and the relist fires `delete` for objects that vanished while
 *     it was down, so consumers see every deletion;
 *   - watches ask for bookmarks and a server-side timeout, so a silently dead connection is
 *     replaced within `watchTimeoutSeconds` (client-node's own watch timeout is not applied).
 */
import { makeInformer, type Informer, type KubeConfig, type KubernetesListObject, type KubernetesObject, type ObjectCache } from '@kubernetes/client-node';
import { backoffDelay } from './backoff.js';
import { statusCode } from './errors.js';
import type { Clock, Timer } from './clock.js';
import type { Logger } from '../log/logger.js';

export type InformerEvent = 'add' | 'update' | 'delete';

export interface ResilientInformerOptions<T extends KubernetesObject> {
  readonly kubeConfig: KubeConfig;
  /** collection path, e.g. /apis/lockmig.dev/v1alpha1/lockcheckpoints or /api/v1/namespaces/ns/pods */
  readonly path: string;
  readonly list: () => Promise<KubernetesListObject<T>>;
  readonly labelSelector?: string;
  readonly clock: Clock;
  readonly logger: Logger;
  /** name for logs, e.g. "lockcheckpoints" */
  readonly name: string;
  readonly backoffBaseMs?: number;
  readonly backoffMaxMs?: number;
  readonly watchTimeoutSeconds?: number;
  /** for tests: the informer factory (default: client-node's makeInformer) */
  readonly factory?: (kc: KubeConfig, path: string, list: () => Promise<KubernetesListObject<T>>, labelSelector?: string) => Informer<T> & ObjectCache<T>;
  /** called on every restart scheduled after an error (metrics) */
  readonly onRestart?: (err: unknown, delayMs: number) => void;
}

export class ResilientInformer<T extends KubernetesObject> implements ObjectCache<T> {
  private readonly o: ResilientInformerOptions<T>;
  private readonly inf: Informer<T> & ObjectCache<T>;
  private readonly handlers: Record<InformerEvent, ((obj: T) => void)[]> = { add: [], update: [], delete: [] };
  private running = false;
  private attempt = 0;
  private restartTimer: Timer | undefined;
  private syncedFlag = false;
  private readonly syncWaiters: (() => void)[] = [];
  private restartCount = 0;
  private lastError: string | undefined;

  constructor(opts: ResilientInformerOptions<T>) {
    this.o = opts;
    const sep = opts.path.includes('?') ? '&' : '?';
    const watchPath = `${opts.path}${sep}allowWatchBookmarks=true&timeoutSeconds=${opts.watchTimeoutSeconds ?? 300}`;
    const list = async () => {
      const l = await opts.list();
      this.attempt = 0;
      this.lastError = undefined;
      // ListWatch adds the items right after this promise resolves; mark synced after that.
      setImmediate(() => this.markSynced());
      return l;
    };
    this.inf = (opts.factory ?? makeInformer)(opts.kubeConfig, watchPath, list, opts.labelSelector);
    this.inf.on('add', (o: T) => this.emit('add', o));
    this.inf.on('update', (o: T) => this.emit('update', o));
    this.inf.on('delete', (o: T) => this.emit('delete', o));
    this.inf.on('error', (err?: unknown) => this.onError(err));
  }

  on(ev: InformerEvent, cb: (obj: T) => void): void {
    this.handlers[ev].push(cb);
  }

  get(name: string, namespace?: string): T | undefined {
    return this.inf.get(name, namespace);
  }

  list(namespace?: string): readonly T[] {
    return this.inf.list(namespace);
  }

  /** true after the first successful list */
  get synced(): boolean {
    return this.syncedFlag;
  }

  get restarts(): number {
    return this.restartCount;
  }

  /** the last error not yet followed by a successful list (for readiness checks) */
  get error(): string | undefined {
    return this.lastError;
  }

  async start(): Promise<void> {
    this.running = true;
    await this.inf.start();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.restartTimer?.cancel();
    this.restartTimer = undefined;
    await this.inf.stop();
    for (const w of this.syncWaiters.splice(0)) w();
  }

  /** Resolves once the cache has been filled by a list (or the informer was stopped). */
  waitForSync(): Promise<void> {
    if (this.syncedFlag || !this.running) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  private markSynced(): void {
    this.syncedFlag = true;
    for (const w of this.syncWaiters.splice(0)) w();
  }

  private emit(ev: InformerEvent, obj: T): void {
    for (const h of this.handlers[ev]) {
      try {
        h(obj);
      } catch (err) {
        this.o.logger.error('informer handler threw', { informer: this.o.name, event: ev, error: (err as Error).message });
      }
    }
  }

  private onError(err: unknown): void {
    if (!this.running) return;
    const msg = err instanceof Error ? err.message : String(err);
    const code = statusCode(err);
    this.lastError = code === 404 ? `${msg} (404: ${this.o.path} is not served; is its CustomResourceDefinition installed?)`
      : code === 401 || code === 403 ? `${msg} (${code}: check the service account's RBAC for ${this.o.path})` : msg;
    const delay = backoffDelay(this.attempt++, { baseMs: this.o.backoffBaseMs ?? 500, maxMs: this.o.backoffMaxMs ?? 30_000 });
    this.o.logger.warn('informer stopped on error; restarting with a relist', { informer: this.o.name, error: this.lastError, retryInMs: delay, attempt: this.attempt });
    this.o.onRestart?.(err, delay);
    this.restartTimer?.cancel();
    this.restartTimer = this.o.clock.setTimer(() => {
      this.restartTimer = undefined;
      if (!this.running) return;
      this.restartCount++;
      this.forceRelist();
      this.inf.start().catch((e: unknown) => this.onError(e));
    }, delay, { unref: true });
  }

  /**
   * ListWatch resumes from its last resourceVersion when started again; clearing it makes the
   * restart list from scratch. The field is private in client-node's typings (1.4.x); if a
   * future version renames it, we fall back to resuming (a stale version then yields 410, which
   * ListWatch answers with a relist itself).
   */
  private forceRelist(): void {
    const lw = this.inf as unknown as { resourceVersion?: unknown };
    if (typeof lw.resourceVersion === 'string') lw.resourceVersion = '';
    else this.o.logger.warn('cannot force a relist on this client-node version; resuming the watch instead', { informer: this.o.name });
  }
}
