/**
 * Leader election on a coordination.k8s.io/v1 Lease, so two controller replicas never act at once.
 *
 * Protocol (the one client-go's leaderelection uses, so lockmig interoperates with kubectl and
 * other tooling reading the Lease):
 *   - a candidate reads the Lease; it may take it when it does not exist, when holderIdentity is
 *     empty (released), or when the record has not changed for leaseDuration as measured on the
 *     candidate's OWN clock since it first observed that record (no trust in other nodes' clocks);
 *   - every write is an update carrying resourceVersion (optimistic concurrency): of two
 *     candidates racing, one gets 409 Conflict and stays a follower;
 *   - the leader renews every retryPeriod; if it has not renewed successfully for renewDeadline
 *     (< leaseDuration) it stops leading at once (fencing): the `signal` handed to the work is
 *     aborted before any other candidate can consider the lease expired;
 *   - on graceful shutdown the leader releases the Lease (empty holder, duration 1s) so a
 *     successor takes over without waiting.
 */
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import type { Clock } from './clock.js';
import type { Logger } from '../log/logger.js';
import { statusCode } from './errors.js';

export interface LeaseRecord {
  readonly holderIdentity: string;
  readonly leaseDurationSeconds: number;
  readonly acquireTime?: number;
  readonly renewTime?: number;
  readonly leaseTransitions: number;
  readonly resourceVersion?: string;
}

/** Storage of one Lease; `update` must fail with LeaseConflict when resourceVersion is stale. */
export interface LeaseStore {
  get(): Promise<LeaseRecord | undefined>;
  create(r: LeaseRecord): Promise<LeaseRecord>;
  update(r: LeaseRecord): Promise<LeaseRecord>;
  /** human-readable `namespace/name` */
  readonly description: string;
}

export class LeaseConflict extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LeaseConflict';
  }
}

export interface LeaderElectorOptions {
  readonly store: LeaseStore;
  readonly identity: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly leaseDurationMs?: number;
  readonly renewDeadlineMs?: number;
  readonly retryPeriodMs?: number;
  /** called when this candidate becomes leader; `signal` aborts when leadership is lost */
  readonly onStartedLeading: (signal: AbortSignal) => void;
  /** called after leadership is lost or released */
  readonly onStoppedLeading?: (reason: 'lost' | 'released') => void;
  /** awaited after the work was told to stop and before the lease is released (graceful shutdown) */
  readonly drain?: () => Promise<unknown>;
  /** called when the observed leader changes (any candidate) */
  readonly onNewLeader?: (identity: string) => void;
}

export class LeaderElector {
  private readonly o: Required<Omit<LeaderElectorOptions, 'onStoppedLeading' | 'onNewLeader' | 'drain'>> & Pick<LeaderElectorOptions, 'onStoppedLeading' | 'onNewLeader' | 'drain'>;
  private observed: { record: LeaseRecord; at: number } | undefined;
  private lastRenew = 0;
  private leading: AbortController | undefined;
  private lastLeader = '';
  private fence: { cancel(): void } | undefined;

  constructor(opts: LeaderElectorOptions) {
    this.o = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000, ...opts };
    if (this.o.renewDeadlineMs >= this.o.leaseDurationMs) throw new Error('renewDeadline must be shorter than leaseDuration');
    if (this.o.retryPeriodMs >= this.o.renewDeadlineMs) throw new Error('retryPeriod must be shorter than renewDeadline');
  }

  get isLeader(): boolean {
    return this.leading !== undefined;
  }

  get leader(): string {
    return this.lastLeader;
  }

  /**
   * Campaigns and leads until `signal` aborts; then releases the lease if held. Losing the lease
   * (renew deadline passed) aborts the work and goes back to campaigning.
   */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const ok = await this.tryAcquireOrRenew();
      if (ok && !this.leading) {
        this.leading = new AbortController();
        this.o.logger.info('became leader', { lease: this.o.store.description, identity: this.o.identity });
        this.armFence();
        this.o.onStartedLeading(this.leading.signal);
      } else if (ok) {
        this.armFence();
      }
      if (this.leading && !ok && this.o.clock.now() - this.lastRenew >= this.o.renewDeadlineMs) {
        this.stopLeading('lost');
      }
      await this.o.clock.sleep(this.o.retryPeriodMs, signal);
    }
    if (this.leading) {
      // stop the work first and let in-flight writes finish, THEN give the lease away: releasing
      // first would let a successor act while our last reconcile is still writing
      this.stopLeading('released');
      await this.o.drain?.();
      await this.release();
    }
  }

  /**
   * Fencing timer: fires renewDeadline after the last successful renew. It also covers a renew
   * request that hangs (the loop above would be stuck in `await` and could not notice).
   */
  private armFence(): void {
    this.fence?.cancel();
    this.fence = this.o.clock.setTimer(() => {
      if (this.leading && this.o.clock.now() - this.lastRenew >= this.o.renewDeadlineMs) this.stopLeading('lost');
    }, this.o.renewDeadlineMs, { unref: true });
  }

  private stopLeading(reason: 'lost' | 'released'): void {
    const l = this.leading;
    if (!l) return;
    this.fence?.cancel();
    this.fence = undefined;
    this.leading = undefined;
    l.abort(new Error(`leadership ${reason}`));
    if (reason === 'lost') this.o.logger.error('lost leadership: failed to renew the lease within the renew deadline; stopping work', { lease: this.o.store.description, identity: this.o.identity });
    else this.o.logger.info('released leadership', { lease: this.o.store.description, identity: this.o.identity });
    this.o.onStoppedLeading?.(reason);
  }

  /** One election step; true when this candidate holds the lease after it. */
  async tryAcquireOrRenew(): Promise<boolean> {
    const now = this.o.clock.now();
    const durSec = Math.ceil(this.o.leaseDurationMs / 1000);
    try {
      const cur = await this.o.store.get();
      if (!cur) {
        const created = await this.o.store.create({ holderIdentity: this.o.identity, leaseDurationSeconds: durSec, acquireTime: now, renewTime: now, leaseTransitions: 0 });
        this.observe(created, now);
        this.lastRenew = now;
        return true;
      }
      this.observe(cur, now);
      const held = cur.holderIdentity !== '' && cur.holderIdentity !== this.o.identity;
      const observedAt = this.observed?.at ?? now;
      // expiry on our own clock, from when we first saw this exact record
      if (held && observedAt + cur.leaseDurationSeconds * 1000 > now) return false;
      const mine = cur.holderIdentity === this.o.identity;
      const next: LeaseRecord = {
        holderIdentity: this.o.identity,
        leaseDurationSeconds: durSec,
        acquireTime: mine ? (cur.acquireTime ?? now) : now,
        renewTime: now,
        leaseTransitions: mine ? cur.leaseTransitions : cur.leaseTransitions + 1,
        ...(cur.resourceVersion !== undefined ? { resourceVersion: cur.resourceVersion } : {}),
      };
      const updated = await this.o.store.update(next);
      this.observe(updated, now);
      this.lastRenew = now;
      return true;
    } catch (err) {
      if (!(err instanceof LeaseConflict)) this.o.logger.warn('leader election step failed', { lease: this.o.store.description, error: (err as Error).message });
      return false;
    }
  }

  private observe(r: LeaseRecord, now: number): void {
    const prev = this.observed?.record;
    if (!prev || prev.resourceVersion !== r.resourceVersion || prev.holderIdentity !== r.holderIdentity || prev.renewTime !== r.renewTime) {
      this.observed = { record: r, at: now };
    }
    if (r.holderIdentity !== this.lastLeader) {
      this.lastLeader = r.holderIdentity;
      if (r.holderIdentity) this.o.onNewLeader?.(r.holderIdentity);
    }
  }

  /** Gives the lease up so a successor does not wait for it to expire. */
  private async release(): Promise<void> {
    const cur = this.observed?.record;
    if (!cur || cur.holderIdentity !== this.o.identity) return;
    try {
      const now = this.o.clock.now();
      await this.o.store.update({ ...cur, holderIdentity: '', leaseDurationSeconds: 1, renewTime: now });
    } catch (err) {
      this.o.logger.warn('could not release the lease', { lease: this.o.store.description, error: (err as Error).message });
    }
  }
}

function toMs(t: unknown): number | undefined {
  if (t === undefined || t === null) return undefined;
  const v = t instanceof Date ? t.getTime() : Date.parse(String(t));
  return Number.isNaN(v) ? undefined : v;
}

/** A LeaseStore over the real API (coordination.k8s.io/v1). */
export function kubeLeaseStore(kc: KubeConfig, namespace: string, name: string, opts: { create?: boolean } = {}): LeaseStore {
  const api = kc.makeApiClient(CoordinationV1Api);
  const toRecord = (l: V1Lease): LeaseRecord => ({
    holderIdentity: l.spec?.holderIdentity ?? '',
    leaseDurationSeconds: l.spec?.leaseDurationSeconds ?? 15,
    ...(toMs(l.spec?.acquireTime) !== undefined ? { acquireTime: toMs(l.spec?.acquireTime) } : {}),
    ...(toMs(l.spec?.renewTime) !== undefined ? { renewTime: toMs(l.spec?.renewTime) } : {}),
    leaseTransitions: l.spec?.leaseTransitions ?? 0,
    ...(l.metadata?.resourceVersion ? { resourceVersion: l.metadata.resourceVersion } : {}),
  });
  const toLease = (r: LeaseRecord): V1Lease => ({
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name, namespace, ...(r.resourceVersion ? { resourceVersion: r.resourceVersion } : {}) },
    spec: {
      holderIdentity: r.holderIdentity,
      leaseDurationSeconds: r.leaseDurationSeconds,
      leaseTransitions: r.leaseTransitions,
      // MicroTime on the wire: RFC 3339 with microseconds (V1MicroTime serializes that way)
      ...(r.acquireTime !== undefined ? { acquireTime: new V1MicroTime(r.acquireTime) } : {}),
      ...(r.renewTime !== undefined ? { renewTime: new V1MicroTime(r.renewTime) } : {}),
    },
  });
  return {
    description: `${namespace}/${name}`,
    async get() {
      try {
        return toRecord(await api.readNamespacedLease({ name, namespace }));
      } catch (err) {
        if (statusCode(err) === 404) return undefined;
        throw err;
      }
    },
    async create(r) {
      // A Lease owned by the installation (the Helm chart creates it): never re-create it, so
      // a controller still shutting down after `helm uninstall` deleted it leaves nothing behind.
      if (opts.create === false) throw new Error(`lease ${namespace}/${name} does not exist and this controller does not create it (--lease-create=false): it belongs to the installation`);
      try {
        return toRecord(await api.createNamespacedLease({ namespace, body: toLease(r) }));
      } catch (err) {
        if (statusCode(err) === 409) throw new LeaseConflict(`lease ${namespace}/${name} was created by another candidate`);
        throw err;
      }
    },
    async update(r) {
      try {
        return toRecord(await api.replaceNamespacedLease({ name, namespace, body: toLease(r) }));
      } catch (err) {
        if (statusCode(err) === 409) throw new LeaseConflict(`lease ${namespace}/${name} changed under us`);
        throw err;
      }
    },
  };
}
