/**
 * The work queue's contract, driven by a fake clock: dedupe, one-at-a-time per key (with
 * re-processing of keys added meanwhile), earliest delayed add wins, per-key exponential backoff.
 */
import { describe, expect, it } from 'vitest';
import { FakeClock, flush } from '../../src/kube/clock.js';
import { WorkQueue, runWorkers } from '../../src/kube/workqueue.js';

describe('WorkQueue', () => {
  it('dedupes a key added many times before it is processed', async () => {
    const q = new WorkQueue({ clock: new FakeClock() });
    q.add('a'); q.add('a'); q.add('b'); q.add('a');
    expect(q.length).toBe(2);
    expect(await q.get()).toBe('a');
    expect(await q.get()).toBe('b');
  });

  it('never hands a key being processed to a second worker; a re-add during processing runs once more after done', async () => {
    const q = new WorkQueue({ clock: new FakeClock() });
    q.add('a');
    const k = await q.get();
    q.add('a');
    q.add('a');
    expect(q.length).toBe(0); // not handed out while processing
    let second: string | undefined;
    void q.get().then((x) => { second = x; });
    await flush();
    expect(second).toBeUndefined();
    q.done(k as string);
    await flush();
    expect(second).toBe('a');
  });

  it('addAfter fires at the deadline, keeps the earliest of several deadlines', async () => {
    const clock = new FakeClock();
    const q = new WorkQueue({ clock });
    q.addAfter('a', 5000);
    q.addAfter('a', 2000);
    q.addAfter('a', 9000);
    expect(q.delayed).toBe(1);
    await clock.advance(1999);
    expect(q.length).toBe(0);
    await clock.advance(1);
    expect(q.length).toBe(1);
    await clock.advance(10_000);
    expect(q.length).toBe(1); // the later deadlines were dropped, not queued again
  });

  it('addRateLimited backs off exponentially per key up to the ceiling; forget resets', () => {
    const q = new WorkQueue({ clock: new FakeClock(), baseDelayMs: 100, maxDelayMs: 1000 });
    expect([1, 2, 3, 4, 5].map(() => q.addRateLimited('a'))).toEqual([100, 200, 400, 800, 1000]);
    expect(q.addRateLimited('b')).toBe(100);
    expect(q.numRequeues('a')).toBe(5);
    q.forget('a');
    expect(q.addRateLimited('a')).toBe(100);
  });

  it('shutDown wakes waiting workers with undefined and drops delayed keys', async () => {
    const clock = new FakeClock();
    const q = new WorkQueue({ clock });
    q.addAfter('x', 100);
    const g = q.get();
    q.shutDown();
    expect(await g).toBeUndefined();
    expect(clock.pending).toBe(0);
    q.add('y');
    expect(q.length).toBe(0);
  });
});

describe('runWorkers', () => {
  it('processes keys concurrently but each key one at a time; failures retry with backoff; success requeues after requeueAfterMs', async () => {
    const clock = new FakeClock();
    const q = new WorkQueue({ clock, baseDelayMs: 1000 });
    const active = new Set<string>();
    let overlap = false;
    const calls: string[] = [];
    let failOnce = true;
    const done = runWorkers(q, 3, async (key) => {
      if (active.has(key)) overlap = true;
      active.add(key);
      calls.push(key);
      await clock.sleep(10);
      active.delete(key);
      if (key === 'bad' && failOnce) {
        failOnce = false;
        throw new Error('boom');
      }
      return key === 'poll' ? { requeueAfterMs: 5000 } : {};
    });
    q.add('a'); q.add('bad'); q.add('poll');
    await clock.advance(10);
    q.add('a'); // while idle: processed again
    await clock.advance(10);
    expect(calls.sort()).toEqual(['a', 'a', 'bad', 'poll']);
    await clock.advance(1000); // bad retried after its backoff
    expect(calls.filter((c) => c === 'bad')).toHaveLength(2);
    await clock.advance(5000);
    expect(calls.filter((c) => c === 'poll')).toHaveLength(2);
    expect(overlap).toBe(false);
    q.shutDown();
    await clock.advance(100);
    await done;
  });
});
