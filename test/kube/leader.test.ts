/**
 * Leader election against an in-memory Lease with real optimistic concurrency, on a fake clock:
 * one leader at a time, takeover only after the lease expires on the follower's own clock,
 * fencing when renewals fail (the work's signal aborts before anyone else may take over),
 * release on shutdown for a fast handover.
 */
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../../src/kube/clock.js';
import { LeaderElector, LeaseConflict, type LeaseRecord, type LeaseStore } from '../../src/kube/leader.js';
import { silentLogger } from '../../src/log/logger.js';

class MemLease implements LeaseStore {
  rec: LeaseRecord | undefined;
  rv = 0;
  failing = false;
  readonly description = 'test/lease';
  async get() {
    if (this.failing) throw new Error('connection refused');
    return this.rec;
  }
  async create(r: LeaseRecord) {
    if (this.failing) throw new Error('connection refused');
    if (this.rec) throw new LeaseConflict('exists');
    this.rec = { ...r, resourceVersion: String(++this.rv) };
    return this.rec;
  }
  async update(r: LeaseRecord) {
    if (this.failing) throw new Error('connection refused');
    if (!this.rec || r.resourceVersion !== this.rec.resourceVersion) throw new LeaseConflict('stale');
    this.rec = { ...r, resourceVersion: String(++this.rv) };
    return this.rec;
  }
}

function candidate(store: LeaseStore, clock: FakeClock, id: string) {
  const state = { leading: false, starts: 0, signal: undefined as AbortSignal | undefined, stops: [] as string[] };
  const e = new LeaderElector({
    store, clock, identity: id, logger: silentLogger(), leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000,
    onStartedLeading: (s) => { state.leading = true; state.starts++; state.signal = s; s.addEventListener('abort', () => { state.leading = false; }); },
    onStoppedLeading: (r) => state.stops.push(r),
  });
  const ac = new AbortController();
  const done = e.run(ac.signal);
  return { e, state, ac, done };
}

describe('LeaderElector', () => {
  it('of two candidates exactly one leads, and keeps leading while it renews', async () => {
    const clock = new FakeClock();
    const store = new MemLease();
    const a = candidate(store, clock, 'a');
    const b = candidate(store, clock, 'b');
    for (let i = 0; i < 30; i++) {
      await clock.advance(1000);
      expect(Number(a.state.leading) + Number(b.state.leading)).toBe(1);
    }
    expect(store.rec?.holderIdentity).toBe('a');
    expect(a.state.starts).toBe(1);
    a.ac.abort(); b.ac.abort();
    await clock.advance(3000);
    await Promise.all([a.done, b.done]);
  });

  it('a crashed leader (no release) is replaced only after leaseDuration on the follower\'s clock', async () => {
    const clock = new FakeClock();
    const store = new MemLease();
    const a = candidate(store, clock, 'a');
    await clock.advance(100);
    expect(a.state.leading).toBe(true);
    // "crash": stop a's loop without release by making it unable to talk, then start b
    a.ac.abort();
    store.failing = true;
    await clock.advance(2100);
    await a.done;
    store.failing = false;
    const b = candidate(store, clock, 'b');
    await clock.advance(14_000);
    expect(b.state.leading).toBe(false);
    await clock.advance(3_000);
    expect(b.state.leading).toBe(true);
    expect(store.rec).toMatchObject({ holderIdentity: 'b', leaseTransitions: 1 });
    b.ac.abort();
    await clock.advance(3000);
    await b.done;
  });

  it('fencing: when renewals fail the leader stops working after renewDeadline, before the lease can expire for others', async () => {
    const clock = new FakeClock();
    const store = new MemLease();
    const a = candidate(store, clock, 'a');
    await clock.advance(100);
    expect(a.state.leading).toBe(true);
    const lastRenew = store.rec?.renewTime as number;
    store.failing = true;
    await clock.advance(9_000);
    expect(a.state.leading).toBe(true);
    await clock.advance(2_000);
    expect(a.state.leading).toBe(false);
    expect(a.state.signal?.aborted).toBe(true);
    expect(a.state.stops).toEqual(['lost']);
    expect(clock.now() - lastRenew).toBeLessThan(15_000);
    // the API comes back: a re-acquires its own lease and leads again
    store.failing = false;
    await clock.advance(2_000);
    expect(a.state.leading).toBe(true);
    expect(a.state.starts).toBe(2);
    a.ac.abort();
    await clock.advance(3000);
    await a.done;
  });

  it('a graceful stop releases the lease and the follower takes over within a retry period', async () => {
    const clock = new FakeClock();
    const store = new MemLease();
    const a = candidate(store, clock, 'a');
    await clock.advance(100);
    const b = candidate(store, clock, 'b');
    await clock.advance(4000);
    expect(b.state.leading).toBe(false);
    a.ac.abort();
    await clock.advance(2000);
    await a.done;
    expect(a.state.stops).toEqual(['released']);
    await clock.advance(2000);
    expect(b.state.leading).toBe(true);
    b.ac.abort();
    await clock.advance(3000);
    await b.done;
  });

  it('on shutdown the work stops and drains BEFORE the lease is released (no overlap with a successor)', async () => {
    const clock = new FakeClock();
    const store = new MemLease();
    const seen: string[] = [];
    let signal: AbortSignal | undefined;
    const e = new LeaderElector({
      store, clock, identity: 'a', logger: silentLogger(), leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000,
      onStartedLeading: (s) => { signal = s; },
      drain: async () => {
        seen.push(`drain: work aborted=${signal?.aborted}, holder=${store.rec?.holderIdentity}`);
        await clock.sleep(500);
      },
    });
    const ac = new AbortController();
    const done = e.run(ac.signal);
    await clock.advance(100);
    ac.abort();
    await clock.advance(1000);
    await done;
    expect(seen).toEqual(['drain: work aborted=true, holder=a']);
    expect(store.rec?.holderIdentity).toBe('');
  });

  it('rejects timing parameters that cannot fence (renewDeadline >= leaseDuration)', () => {
    expect(() => new LeaderElector({
      store: new MemLease(), clock: new FakeClock(), identity: 'x', logger: silentLogger(), leaseDurationMs: 10_000, renewDeadlineMs: 10_000, onStartedLeading: () => {},
    })).toThrow(/renewDeadline must be shorter than leaseDuration/);
  });
});
