/**
 * Versioned in-memory storage: one global resourceVersion counter (like etcd's revision), an event
 * history that watches replay from, compaction (after which old resourceVersions answer 410 Gone),
 * and point-in-time snapshots rebuilt from the history for `resourceVersionMatch=Exact` and `continue`.
 */

export type Obj = Record<string, any>;
export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  readonly type: EventType;
  readonly rv: number;
  readonly storageKey: string;
  /** The object after the change (for DELETED: the last state, carrying the deletion's resourceVersion). */
  readonly object: Obj;
  /** The object before the change (undefined for ADDED). */
  readonly prev?: Obj;
}

export class ResourceVersionTooOld extends Error {
  constructor(readonly requested: number, readonly oldest: number) {
    super(`too old resource version: ${requested} (${oldest})`);
    this.name = 'ResourceVersionTooOld';
  }
}

export function objKey(o: Obj): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

export class Store {
  private rv: number;
  private readonly data = new Map<string, Map<string, Obj>>();
  private history: StoreEvent[] = [];
  /** Events with rv <= compactedRV are gone. */
  private compactedRV: number;
  private readonly subscribers = new Set<(ev: StoreEvent) => void>();

  constructor(private readonly maxHistory: number, startRV = 1000) {
    this.rv = startRV;
    this.compactedRV = startRV;
  }

  get currentRV(): number { return this.rv; }
  get oldestRV(): number { return this.compactedRV; }

  private bucket(storageKey: string): Map<string, Obj> {
    let b = this.data.get(storageKey);
    if (!b) { b = new Map(); this.data.set(storageKey, b); }
    return b;
  }

  get(storageKey: string, namespace: string, name: string): Obj | undefined {
    return this.data.get(storageKey)?.get(`${namespace}/${name}`);
  }

  /** Current objects, sorted by namespace/name like etcd's key order. */
  list(storageKey: string, namespace?: string): Obj[] {
    const b = this.data.get(storageKey);
    if (!b) return [];
    return [...b.entries()]
      .filter(([, o]) => !namespace || o.metadata?.namespace === namespace)
      .sort(([a], [b2]) => (a < b2 ? -1 : a > b2 ? 1 : 0))
      .map(([, o]) => o);
  }

  /** Every storage key that holds objects. */
  keys(): string[] {
    return [...this.data.keys()];
  }

  /** Stores `obj` (which must already be complete) with a fresh resourceVersion and notifies watchers. */
  commit(storageKey: string, type: EventType, obj: Obj, prev?: Obj): Obj {
    this.rv += 1;
    obj.metadata.resourceVersion = String(this.rv);
    const b = this.bucket(storageKey);
    if (type === 'DELETED') b.delete(objKey(obj));
    else b.set(objKey(obj), obj);
    const ev: StoreEvent = { type, rv: this.rv, storageKey, object: obj, prev };
    this.history.push(ev);
    if (this.history.length > this.maxHistory) {
      const drop = this.history.length - this.maxHistory;
      this.compactedRV = this.history[drop - 1]!.rv;
      this.history = this.history.slice(drop);
    }
    for (const s of [...this.subscribers]) s(ev);
    return obj;
  }

  /** Drops all history up to `upTo` (default: now): older resourceVersions become 410 Gone. */
  compact(upTo: number = this.rv): void {
    this.compactedRV = Math.max(this.compactedRV, Math.min(upTo, this.rv));
    this.history = this.history.filter((e) => e.rv > this.compactedRV);
  }

  /** Events after `rv` for one storage key; throws ResourceVersionTooOld when compacted away. */
  eventsSince(storageKey: string, rv: number): StoreEvent[] {
    if (rv < this.compactedRV) throw new ResourceVersionTooOld(rv, this.compactedRV);
    return this.history.filter((e) => e.rv > rv && e.storageKey === storageKey);
  }

  /** The objects of `storageKey` as they were at `rv`. */
  snapshot(storageKey: string, rv: number, namespace?: string): Obj[] {
    if (rv >= this.rv) return this.list(storageKey, namespace);
    if (rv < this.compactedRV) throw new ResourceVersionTooOld(rv, this.compactedRV);
    const state = new Map<string, Obj>();
    for (const o of this.list(storageKey)) state.set(objKey(o), o);
    for (let i = this.history.length - 1; i >= 0; i--) {
      const e = this.history[i]!;
      if (e.rv <= rv) break;
      if (e.storageKey !== storageKey) continue;
      if (e.type === 'ADDED') state.delete(objKey(e.object));
      else state.set(objKey(e.prev!), e.prev!);
    }
    return [...state.entries()]
      .filter(([, o]) => !namespace || o.metadata?.namespace === namespace)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, o]) => o);
  }

  subscribe(fn: (ev: StoreEvent) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }
}
