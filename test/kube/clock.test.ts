/**
 * realClock with delays beyond what a Node.js timer holds (2^31-1 ms, about 24.9 days): Node fires
 * such a timer after 1 ms with a TimeoutOverflowWarning, which turned a long requeue into a hot
 * loop (found by the LockCheckpoint fuzzer, see test/fuzz). realClock now waits in steps.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { realClock } from '../../src/kube/clock.js';

describe('realClock and delays over 2^31-1 ms (fuzz: timer overflow)', () => {
  it('a timer of 30 days does not fire after 1 ms, and no TimeoutOverflowWarning is emitted', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      let fired = 0;
      const t = realClock.setTimer(() => { fired++; }, 30 * 86_400_000);
      await sleep(300);
      expect(fired).toBe(0);
      t.cancel();
      const ac = new AbortController();
      let slept = false;
      const p = realClock.sleep(2 ** 31, ac.signal).then(() => { slept = true; });
      await sleep(300);
      expect(slept).toBe(false);
      ac.abort();
      await p;
      expect(slept).toBe(true);
      expect(warnings).not.toContain('TimeoutOverflowWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('short timers still fire, and cancel stops them', async () => {
    let fired = 0;
    realClock.setTimer(() => { fired++; }, 5);
    const c = realClock.setTimer(() => { fired += 100; }, 5);
    c.cancel();
    await sleep(200);
    expect(fired).toBe(1);
    await realClock.sleep(1);
  });
});
